//! Markdown for articles (pulldown-cmark). Rendering is the only way an
//! article reaches a page, and it cannot carry markup: raw HTML in the
//! source becomes text, links keep only safe schemes, and images become
//! plain links (no page loads anything an author pointed at).

use pulldown_cmark::{CowStr, Event, LinkType, Options, Parser, Tag, TagEnd};

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH
}

/// Whether a link target is harmless: http(s), mailto, or a path on this site.
fn safe_url(url: &str) -> bool {
    let u = url.trim().to_ascii_lowercase();
    u.starts_with("https://")
        || u.starts_with("http://")
        || u.starts_with("mailto:")
        || u.starts_with('#')
        || (u.starts_with('/') && !u.starts_with("//"))
        // Relative paths have no scheme before their first '/'.
        || (!u.contains(':') && !u.starts_with("//"))
}

fn safe_link(dest: CowStr<'_>) -> CowStr<'_> {
    if safe_url(&dest) {
        dest
    } else {
        CowStr::Borrowed("#")
    }
}

/// The article body as HTML that is safe to put in a page as it is.
pub fn render(body: &str) -> String {
    let events = Parser::new_ext(body, options()).map(|e| match e {
        Event::Html(s) | Event::InlineHtml(s) => Event::Text(s),
        Event::Start(Tag::Link {
            link_type,
            dest_url,
            title,
            id,
        }) => Event::Start(Tag::Link {
            link_type,
            dest_url: safe_link(dest_url),
            title,
            id,
        }),
        Event::Start(Tag::Image {
            dest_url,
            title,
            id,
            ..
        }) => Event::Start(Tag::Link {
            link_type: LinkType::Inline,
            dest_url: safe_link(dest_url),
            title,
            id,
        }),
        Event::End(TagEnd::Image) => Event::End(TagEnd::Link),
        other => other,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

/// Plain-text blocks (paragraphs, list items, headings, table cells).
fn blocks(body: &str) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut list_depth = 0usize;
    let mut item_of_first_list = false;
    let mut first_list_done = false;
    let flush = |buf: &mut String, in_list: bool, out: &mut Vec<(String, bool)>| {
        let t = buf.split_whitespace().collect::<Vec<_>>().join(" ");
        if !t.is_empty() {
            out.push((t, in_list));
        }
        buf.clear();
    };
    for e in Parser::new_ext(body, options()) {
        match e {
            Event::Text(t) | Event::Code(t) | Event::Html(t) | Event::InlineHtml(t) => {
                buf.push_str(&t)
            }
            Event::SoftBreak | Event::HardBreak => buf.push(' '),
            Event::Start(Tag::List(_)) => {
                flush(&mut buf, item_of_first_list, &mut out);
                list_depth += 1;
                if list_depth == 1 && !first_list_done {
                    item_of_first_list = true;
                }
            }
            Event::End(TagEnd::List(_)) => {
                flush(&mut buf, item_of_first_list, &mut out);
                list_depth = list_depth.saturating_sub(1);
                if list_depth == 0 && item_of_first_list {
                    item_of_first_list = false;
                    first_list_done = true;
                }
            }
            Event::End(
                TagEnd::Paragraph
                | TagEnd::Item
                | TagEnd::Heading(_)
                | TagEnd::TableCell
                | TagEnd::CodeBlock,
            ) => flush(&mut buf, item_of_first_list && list_depth == 1, &mut out),
            _ => {}
        }
    }
    flush(&mut buf, false, &mut out);
    out
}

/// The items of the first list in the body, as plain text.
pub fn first_list_items(body: &str) -> Vec<String> {
    blocks(body)
        .into_iter()
        .filter(|(_, in_list)| *in_list)
        .map(|(t, _)| t)
        .collect()
}

/// Every sentence of the body as plain text.
pub fn plain_sentences(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (block, _) in blocks(body) {
        let mut start = 0;
        let chars: Vec<(usize, char)> = block.char_indices().collect();
        for (k, &(i, c)) in chars.iter().enumerate() {
            let next_is_space = chars.get(k + 1).is_none_or(|&(_, n)| n == ' ');
            if matches!(c, '.' | '!' | '?') && next_is_space {
                let s = block[start..=i].trim();
                if !s.is_empty() {
                    out.push(s.to_string());
                }
                start = i + c.len_utf8();
            }
        }
        let rest = block[start..].trim();
        if !rest.is_empty() {
            out.push(rest.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_html_is_text() {
        let html = render("Hi <script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n");
        assert!(!html.contains("<script"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<img"), "{html}");
    }

    #[test]
    fn only_safe_links() {
        let html = render(
            "[a](javascript:alert(1)) [b](https://example.com/x) [c](/kb/other) ![d](data:image/png;base64,AA)",
        );
        assert!(!html.contains("javascript:"), "{html}");
        assert!(!html.contains("data:"), "{html}");
        assert!(html.contains(r#"href="https://example.com/x""#), "{html}");
        assert!(html.contains(r#"href="/kb/other""#), "{html}");
        assert!(!html.contains("<img"), "{html}");
    }

    #[test]
    fn renders_markdown() {
        let html = render("# Title\n\n1. **One**\n2. Two\n");
        assert!(html.contains("<h1>Title</h1>"), "{html}");
        assert!(
            html.contains("<ol>") && html.contains("<strong>One</strong>"),
            "{html}"
        );
    }

    #[test]
    fn lists_and_sentences() {
        let body = "Intro text. More here!\n\n1. Step one.\n2. Step `two`.\n   - nested\n\nAfter.\n\n- other list\n";
        assert_eq!(first_list_items(body), ["Step one.", "Step two."]);
        assert_eq!(
            plain_sentences(body),
            [
                "Intro text.",
                "More here!",
                "Step one.",
                "Step two.",
                "nested",
                "After.",
                "other list"
            ]
        );
    }
}
