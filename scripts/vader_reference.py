#!/usr/bin/env python3
"""Vendors the VADER lexicons and writes reference scores for our Rust port.

Run with the reference package installed (pip install vaderSentiment==3.3.2):

    python3 scripts/vader_reference.py

Writes:
  src/agents/vader/vader_lexicon.tsv   word<TAB>valence (MIT data from vaderSentiment 3.3.2)
  src/agents/vader/emoji_lexicon.tsv   emoji<TAB>description
  tests/fixtures/vader_reference.json  [{text, neg, neu, pos, compound}, ...]
"""
import itertools
import json
import os

import vaderSentiment
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

assert vaderSentiment.__file__
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.dirname(vaderSentiment.__file__)

BASE = [
    # realistic support tickets
    "I was charged twice for my subscription this month, please refund me.",
    "The app crashes every time I open the settings page.",
    "My account was hacked and someone changed my password. URGENT!",
    "Where is my order? It was supposed to arrive last week.",
    "I can't log in, the 2FA code never arrives.",
    "Thanks so much, the new dashboard is great!",
    "The invoice shows the wrong amount, can you check?",
    "I need a refund for a damaged item, the box was crushed.",
    "Your service is terrible and I want to cancel immediately.",
    "Just wondering how to change my email address.",
    "Payment failed with error 402 but my card is fine.",
    "The export has been slow for days, it is a serious issue for our team.",
    "Is there a way to download all my invoices at once?",
    "Someone used my card for fraud on your site, I'm calling the police.",
    "I love the product but the sync is kind of flaky.",
    "This is the third time I'm writing, nobody answers. Unacceptable.",
    "Could you please reset my password? Thank you!",
    "The delivery was late but the driver was very friendly.",
    "Website shows a blank page after login since yesterday's update.",
    "I want to file a complaint about your support agent.",
    "My subscription renewed even though I cancelled it. Not happy.",
    "Everything works now, you can close this ticket. Great job :)",
    "The tracking number you sent doesn't work.",
    "Why was my account locked? I did nothing wrong.",
    "Please help asap, our whole shop is down and we are losing money!!!",
    "How do I enable dark mode?",
    "The new update is awesome, but the battery drain is horrible.",
    "I'm not unhappy with the service, just confused by the pricing.",
    "Refund still not processed after 3 weeks?? This is a scam.",
    "Hello, I would like to upgrade my plan to the business tier.",
    # VADER's own examples and tricky constructions
    "VADER is smart, handsome, and funny.",
    "VADER is smart, handsome, and funny!",
    "VADER is very smart, handsome, and funny.",
    "VADER is VERY SMART, handsome, and FUNNY.",
    "VADER is VERY SMART, handsome, and FUNNY!!!",
    "VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!",
    "VADER is not smart, handsome, nor funny.",
    "The book was good.",
    "At least it isn't a horrible book.",
    "The book was only kind of good.",
    "The plot was good, but the characters are uncompelling and the dialog is not great.",
    "Today SUX!",
    "Today only kinda sux! But I'll get by, lol",
    "Make sure you :) or :D today!",
    "Catch utf-8 emoji such as 💘 and 💋 and 😁",
    "Not bad at all",
    "Sentiment analysis has never been good.",
    "Sentiment analysis has never been this good!",
    "Most automated sentiment analysis tools are shit.",
    "With VADER, sentiment analysis is the shit!",
    "Other sentiment analysis tools can be quite bad.",
    "On the other hand, VADER is quite bad ass",
    "VADER is such a badass!",
    "Without a doubt, excellent idea.",
    "Roger Dodger is one of the most compelling variations on this theme.",
    "Roger Dodger is at least compelling as a variation on the theme.",
    "Roger Dodger is one of the least compelling variations on this theme.",
    "Not such a badass after all.",
    "Without a doubt, an excellent idea.",
    "It was one of the worst movies I've seen, despite good reviews.",
    "Unbelievably bad acting!! Poor direction. VERY poor production.",
    "no problem at all, no worries",
    "There is no good reason, no or nor bad either.",
    "He is the least helpful agent, at least he tried, very least.",
    "The food was good but the service was bad but the view was great.",
    "good good good bad bad",
    "cut the mustard, hand to mouth, under the weather, in the red",
    "this product is to die for, the bomb, yeah right",
    "I just barely like it, it's sort of ok, hardly great",
    "never so good, never this bad, without doubt good",
    "The support was not very good and not at all helpful",
    "I'm so so sorry :( :-( </3 <3",
    "Fantastic 👍 but slow 🐢 and broken 💔",
    "¡Qué desastre! El pedido llegó roto.",
    "Le service client est excellent, merci beaucoup.",
    "Das ist wirklich schlecht, ich bin sehr enttäuscht.",
    "注文がまだ届きません。",
    "Пожалуйста, помогите, аккаунт заблокирован.",
    "",
    "   ",
    "?!?!",
    "!!!!!!",
    "ok",
    "OK",
    "Ok?",
    "What???",
    "Why is this so expensive????",
    "HELP",
    "HELP ME PLEASE the server is DOWN",
    "I am SO angry right now",
    "it's 'great'... \"really\" (not) [bad] {fine} <good>",
    "--great-- ..bad.. ,,nice,,",
    "a:) b:( :)) :(( =) =(",
    "don't do it, doesn't work, didn't help, won't load, can't login",
    "dont care, cant stop, wont stop, isnt good, aint bad",
    "I don't not like it",
    "Nothing works and nobody cares",
    "This is extremely, incredibly, absolutely awful",
    "slightly annoying, somewhat useful, marginally better",
    "The agent was kind of rude, kind of helpful",
    "The ÉCRAN is BROKEN and the ñandú is fine",
    "ǅemal is FINE, ǄEMAL is GREAT",
    "tabs\tand\nnewlines\r\nand  double  spaces are great",
    "emoji at end 😡",
    "😡😡😡",
    "😀 happy 😀",
    "a😀b",
    "smile😀",
    "🙂🙃😉",
    "I'd give it 0/10 - would not recommend!!!1",
    "http://example.com is broken, email me at bob@example.com :-)",
    "Order #12345 (qty: 3) never arrived; refund $49.99 please.",
]

MODIFIERS = [
    lambda t: t.upper(),
    lambda t: t + "!!!",
    lambda t: t + "?",
    lambda t: "I think " + t.lower(),
    lambda t: t + " but honestly it is fine",
    lambda t: "not " + t,
    lambda t: t + " :(",
    lambda t: t + " 😊",
    lambda t: "very " + t,
    lambda t: "kind of " + t,
]


def corpus():
    texts = list(BASE)
    # Deterministic variations: every 3rd base text with every modifier.
    for i, (t, m) in enumerate(itertools.product(BASE[::3], MODIFIERS)):
        if i % 2 == 0:
            texts.append(m(t))
    seen, out = set(), []
    for t in texts:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def vendor(src, dst):
    """Writes the first two tab-separated fields of each line, parsed as VADER does."""
    with open(os.path.join(PKG, src), encoding="utf-8") as f:
        raw = f.read()
    lines = []
    for line in raw.rstrip("\n").split("\n"):
        if not line:
            continue
        key, value = line.strip().split("\t")[0:2]
        lines.append(f"{key}\t{value}")
    with open(os.path.join(ROOT, dst), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def main():
    vendor("vader_lexicon.txt", "src/agents/vader/vader_lexicon.tsv")
    vendor("emoji_utf8_lexicon.txt", "src/agents/vader/emoji_lexicon.tsv")
    analyzer = SentimentIntensityAnalyzer()
    rows = []
    for text in corpus():
        s = analyzer.polarity_scores(text)
        rows.append({"text": text, **s})
    path = os.path.join(ROOT, "tests/fixtures/vader_reference.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"vaderSentiment": "3.3.2", "cases": rows}, f, ensure_ascii=False, indent=1)
    print(f"wrote {len(rows)} reference cases to {path}")


if __name__ == "__main__":
    main()
