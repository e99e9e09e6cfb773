//! The dashboard's pictures as inline SVG, drawn on the server (no scripts,
//! no CDN). Each chart has a `<title>` and `<desc>` for screen readers and
//! prints its numbers as text, so it reads without colour.

use std::fmt::Write;

use crate::store::DashboardStats;
use crate::ticket::{Category, Priority, Status};

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A CSS class from a label: lowercase letters, digits and dashes only.
fn class_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

fn open_svg(id: &str, w: u32, h: u32, title: &str, desc: &str) -> String {
    format!(
        r#"<svg class="chart" id="{id}" viewBox="0 0 {w} {h}" width="100%" role="img" aria-labelledby="{id}-title {id}-desc" xmlns="http://www.w3.org/2000/svg"><title id="{id}-title">{}</title><desc id="{id}-desc">{}</desc>"#,
        esc(title),
        esc(desc)
    )
}

/// Horizontal bars, one per label, value printed at the end of each.
pub fn bars(id: &str, title: &str, kind: &str, items: &[(String, i64)]) -> String {
    let max = items.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    let row = 26u32;
    let (label_w, bar_w) = (90u32, 190u32);
    let h = row * items.len() as u32 + 8;
    let desc = items
        .iter()
        .map(|(l, n)| format!("{l}: {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = open_svg(id, label_w + bar_w + 50, h, title, &desc);
    for (i, (label, n)) in items.iter().enumerate() {
        let y = 4 + row * i as u32;
        let w = ((*n as f64 / max as f64) * f64::from(bar_w)).round() as u32;
        let _ = write!(
            s,
            r#"<g class="bar {kind}-{cls}"><text x="{tx}" y="{ty}" text-anchor="end">{label}</text><rect x="{label_w}" y="{y}" width="{w}" height="18" rx="3"><title>{label}: {n}</title></rect><text class="value" x="{vx}" y="{ty}">{n}</text></g>"#,
            cls = class_name(label),
            tx = label_w - 6,
            ty = y + 13,
            label = esc(label),
            vx = label_w + w + 6,
        );
    }
    s.push_str("</svg>");
    s
}

/// Stacked columns: tickets created each day, split by their current status.
pub fn days(id: &str, title: &str, days: &[(String, Vec<(String, i64)>)]) -> String {
    let (w, h, top, bottom, left) = (330u32, 170u32, 10u32, 36u32, 28u32);
    let plot_h = h - top - bottom;
    let max = days
        .iter()
        .map(|(_, parts)| parts.iter().map(|(_, n)| n).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let col = (w - left - 4) / days.len().max(1) as u32;
    let desc = days
        .iter()
        .map(|(d, parts)| {
            let total: i64 = parts.iter().map(|(_, n)| n).sum();
            format!("{d}: {total}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = open_svg(id, w, h, title, &format!("Tickets created per day: {desc}"));
    value_axis(&mut s, &max.to_string(), top, plot_h, left, w);
    for (i, (day, parts)) in days.iter().enumerate() {
        let x = left + col * i as u32 + 2;
        let mut y = top + plot_h;
        for (status, n) in parts {
            if *n == 0 {
                continue;
            }
            let bh = ((*n as f64 / max as f64) * f64::from(plot_h))
                .round()
                .max(1.0) as u32;
            y = y.saturating_sub(bh);
            let _ = write!(
                s,
                r#"<rect class="status-{cls}" x="{x}" y="{y}" width="{cw}" height="{bh}"><title>{day}: {n} {status}</title></rect>"#,
                cls = class_name(status),
                cw = col.saturating_sub(3).max(1),
                day = esc(day),
                status = esc(status),
            );
        }
        date_label(
            &mut s,
            days.len() - 1 - i,
            x + col / 2,
            top + plot_h + 14,
            day,
        );
    }
    let names: Vec<&str> = Status::ALL.iter().map(|st| st.as_str()).collect();
    legend(&mut s, "status", &names, left, h);
    s.push_str("</svg>");
    s
}

/// One filled bar out of a whole, with the figure as text.
pub fn share(id: &str, title: &str, part: f64, whole: f64, caption: &str) -> String {
    let frac = if whole > 0.0 {
        (part / whole).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let mut s = open_svg(id, 330, 50, title, caption);
    let _ = write!(
        s,
        r#"<rect class="track" x="0" y="4" width="330" height="18" rx="4"/><rect class="fill" x="0" y="4" width="{}" height="18" rx="4"/><text class="value" x="0" y="42">{}</text></svg>"#,
        (frac * 330.0).round(),
        esc(caption)
    );
    s
}

/// Service levels met per week and priority: for each week a column per
/// priority with a policy, as tall as the share of its decided tickets that
/// met every target; the figures are in each column's title and the
/// description.
pub fn compliance(
    id: &str,
    title: &str,
    weeks: &[String],
    priorities: &[Priority],
    rows: &[crate::store::sla::Compliance],
) -> String {
    let (w, h, top, bottom, left) = (330u32, 170u32, 10u32, 36u32, 34u32);
    let plot_h = h - top - bottom;
    let find = |week: &str, p: Priority| {
        rows.iter()
            .find(|r| r.week == week && r.priority == p)
            .map_or((0, 0), |r| (r.decided, r.missed))
    };
    let mut desc = Vec::new();
    for week in weeks {
        for p in priorities {
            let (decided, missed) = find(week, *p);
            if decided > 0 {
                desc.push(format!(
                    "week of {week}, {p}: {} of {decided} met ({:.0}%)",
                    decided - missed,
                    100.0 * (decided - missed) as f64 / decided as f64
                ));
            }
        }
    }
    let desc = if desc.is_empty() {
        "No ticket with a service level has an outcome yet".to_string()
    } else {
        desc.join(", ")
    };
    let mut s = open_svg(id, w, h, title, &desc);
    value_axis(&mut s, "100%", top, plot_h, left, w);
    let group = (w - left - 4) / weeks.len().max(1) as u32;
    let col = (group.saturating_sub(4) / priorities.len().max(1) as u32).max(1);
    for (i, week) in weeks.iter().enumerate() {
        let gx = left + group * i as u32 + 2;
        for (j, p) in priorities.iter().enumerate() {
            let (decided, missed) = find(week, *p);
            if decided == 0 {
                continue;
            }
            let share = (decided - missed) as f64 / decided as f64;
            let bh = (share * f64::from(plot_h)).round().max(1.0) as u32;
            // The whole column faint, the met share filled: a week that met
            // nothing still shows its (empty) column.
            let _ = write!(
                s,
                r#"<rect class="track" x="{x}" y="{top}" width="{cw}" height="{plot_h}"/><rect class="priority-{cls}" x="{x}" y="{y}" width="{cw}" height="{bh}"><title>week of {week}, {p}: {met} of {decided} met</title></rect>"#,
                cls = class_name(p.as_str()),
                x = gx + col * j as u32,
                y = top + plot_h - bh,
                cw = col.saturating_sub(1).max(1),
                week = esc(week),
                met = decided - missed,
            );
        }
        date_label(
            &mut s,
            weeks.len() - 1 - i,
            gx + group / 2,
            top + plot_h + 14,
            week,
        );
    }
    let names: Vec<&str> = priorities.iter().map(|p| p.as_str()).collect();
    legend(&mut s, "priority", &names, left, h);
    s.push_str("</svg>");
    s
}

/// The date (`MM-DD` of `YYYY-MM-DD`) under a column centred at `x`, on
/// every other column counted back from the newest (`back` columns before
/// it), to stay readable.
fn date_label(s: &mut String, back: usize, x: u32, y: u32, date: &str) {
    if back.is_multiple_of(2) {
        let _ = write!(
            s,
            r#"<text class="axis" x="{x}" y="{y}" text-anchor="middle">{}</text>"#,
            esc(date.get(5..).unwrap_or(date))
        );
    }
}

/// A colour key along the bottom of a chart `h` high: a swatch of class
/// `{kind}-{name}` and the name, for each name.
fn legend(s: &mut String, kind: &str, names: &[&str], left: u32, h: u32) {
    for (i, name) in names.iter().enumerate() {
        let x = left + 74 * i as u32;
        let _ = write!(
            s,
            r#"<rect class="{kind}-{cls}" x="{x}" y="{ly}" width="10" height="10"/><text class="axis" x="{tx}" y="{ty}">{name}</text>"#,
            cls = class_name(name),
            ly = h - 12,
            tx = x + 13,
            ty = h - 3,
            name = esc(name)
        );
    }
}

/// The value axis: its top and bottom labels and the base line.
fn value_axis(s: &mut String, top_label: &str, top: u32, plot_h: u32, left: u32, w: u32) {
    let _ = write!(
        s,
        r#"<text class="axis" x="2" y="{}">{}</text><text class="axis" x="2" y="{}">0{}</text><line class="axis" x1="{left}" y1="{}" x2="{w}" y2="{}"/>"#,
        top + 8,
        esc(top_label),
        top + plot_h,
        if top_label.ends_with('%') { "%" } else { "" },
        top + plot_h,
        top + plot_h
    );
}

/// All dashboard charts for `stats`; `days_list` are the 14 days shown.
pub fn dashboard(stats: &DashboardStats, days_list: &[String]) -> Vec<(String, String)> {
    let find = |v: &[(String, i64)], k: &str| v.iter().find(|(l, _)| l == k).map_or(0, |(_, n)| *n);
    let cats: Vec<(String, i64)> = Category::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), find(&stats.by_category, c.as_str())))
        .collect();
    let pris: Vec<(String, i64)> = Priority::ALL
        .iter()
        .map(|p| (p.as_str().to_string(), find(&stats.by_priority, p.as_str())))
        .collect();
    let daily: Vec<(String, Vec<(String, i64)>)> = days_list
        .iter()
        .map(|d| {
            let parts = Status::ALL
                .iter()
                .map(|st| {
                    let n = stats
                        .daily
                        .iter()
                        .find(|(day, s, _)| day == d && s == st.as_str())
                        .map_or(0, |(_, _, n)| *n);
                    (st.as_str().to_string(), n)
                })
                .collect();
            (d.clone(), parts)
        })
        .collect();
    let esc_caption = if stats.processed > 0 {
        format!(
            "{:.0}% escalated ({} of {} processed tickets)",
            100.0 * stats.escalated as f64 / stats.processed as f64,
            stats.escalated,
            stats.processed
        )
    } else {
        "No processed tickets yet".to_string()
    };
    let rating_caption = match stats.average_rating {
        Some(a) => format!("{a:.1} of 5 stars from {} ratings", stats.rated),
        None => "No ratings yet".to_string(),
    };
    vec![
        (
            "Tickets per category".into(),
            bars("chart-category", "Tickets per category", "category", &cats),
        ),
        (
            "Tickets per priority".into(),
            bars("chart-priority", "Tickets per priority", "priority", &pris),
        ),
        (
            "Status over the last 14 days".into(),
            days(
                "chart-days",
                "Tickets per day by current status, last 14 days",
                &daily,
            ),
        ),
        (
            "Escalations".into(),
            share(
                "chart-escalations",
                "Share of escalated tickets",
                stats.escalated as f64,
                stats.processed as f64,
                &esc_caption,
            ),
        ),
        (
            "Average rating".into(),
            share(
                "chart-rating",
                "Average customer rating",
                stats.average_rating.unwrap_or(0.0),
                5.0,
                &rating_caption,
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_escape_text_and_carry_titles() {
        let svg = bars(
            "x",
            "T <1>",
            "category",
            &[("a<b".into(), 3), ("c".into(), 0)],
        );
        assert!(svg.contains("<title id=\"x-title\">T &lt;1&gt;</title>"));
        assert!(svg.contains("a&lt;b"));
        assert!(!svg.contains("a<b"));
        assert!(svg.contains(">3</text>") && svg.contains(">0</text>"));
        let s = share("e", "Esc", 1.0, 4.0, "25% escalated");
        assert!(s.contains("width=\"83\""), "{s}");
        let st = DashboardStats {
            by_category: vec![("Billing".into(), 2)],
            daily: vec![("2026-11-24".into(), "Open".into(), 2)],
            processed: 2,
            escalated: 1,
            rated: 1,
            average_rating: Some(4.0),
            ..Default::default()
        };
        let charts = dashboard(&st, &["2026-11-23".into(), "2026-11-24".into()]);
        assert_eq!(charts.len(), 5);
        assert!(charts[2].1.contains("2026-11-24: 2 Open"));
        assert!(charts[3].1.contains("50% escalated (1 of 2"));
        assert!(charts[4].1.contains("4.0 of 5 stars from 1 ratings"));
    }

    #[test]
    fn compliance_columns_are_the_met_share() {
        use crate::store::sla::Compliance;
        let weeks = ["2026-11-23".to_string(), "2026-11-30".to_string()];
        let rows = [
            Compliance {
                week: "2026-11-30".into(),
                priority: Priority::Critical,
                decided: 4,
                missed: 1,
            },
            Compliance {
                week: "2026-11-30".into(),
                priority: Priority::Low,
                decided: 2,
                missed: 2,
            },
        ];
        let svg = compliance(
            "c",
            "T",
            &weeks,
            &[Priority::Critical, Priority::Low],
            &rows,
        );
        assert!(
            svg.contains("week of 2026-11-30, Critical: 3 of 4 met (75%)"),
            "{svg}"
        );
        assert!(svg.contains("week of 2026-11-30, Low: 0 of 2 met (0%)"));
        // 75% of the 124-pixel plot; a column that met nothing stays visible.
        assert!(
            svg.contains(r#"height="93"><title>week of 2026-11-30, Critical"#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"height="1"><title>week of 2026-11-30, Low"#),
            "{svg}"
        );
        assert!(!svg.contains("2026-11-23, Critical"));
        let empty = compliance("c", "T", &weeks, &[Priority::High], &[]);
        assert!(empty.contains("No ticket with a service level has an outcome yet"));
    }
}
