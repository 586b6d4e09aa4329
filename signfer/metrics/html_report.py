"""The report of a run folder as one self-contained HTML page.

Everything the page shows is inside the file: figures are PNGs inlined as
``data:`` URIs, the style sheet is inline, and no script, font or image is
fetched from anywhere, so ``report.html`` opens from a mail attachment or a
USB stick, with no server and no network. It renders the same blocks as
``results.md`` (:func:`signfer.metrics.report.report_blocks`).

Example:
    >>> write_report("runs/paper", html=True)  # doctest: +SKIP
    >>> # runs/paper/report.html
"""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1.5em; color: #1b1b1b; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #eee; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
figure { margin: .8em 0 1.4em; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #555; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; }
code { background: #f3f3f3; padding: 0 .2em; }
"""

_NUMBER = re.compile(r"^[-+<]?[\d.]+( ± [\d.]+)?( \([\d.]+\))?$")


def _inline(text: str) -> str:
    """Markdown's **bold**, _italic_ and `code` inside a paragraph or cell, HTML-escaped."""
    out = html.escape(str(text))
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return re.sub(r"(?<![\w])_(.+?)_(?![\w])", r"<em>\1</em>", out)


def _table(df) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for row in df.itertuples(index=False):
        cells = []
        for v in row:
            text = str(v)
            plain = text.replace("**", "")
            cls = ' class="num"' if _NUMBER.match(plain) else ""
            cells.append(f"<td{cls}>{_inline(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(blocks, out_dir: str | os.PathLike, title: str) -> str:
    """The blocks as one HTML page; each figure's PNG (in ``out_dir``) is inlined."""
    out_dir = Path(out_dir)
    body = []
    for b in blocks:
        if b.kind == "heading":
            body.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif b.kind == "text":
            body.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "table":
            body.append(_table(b.table))
        elif b.kind == "figure":
            alt = html.escape(b.text, quote=True)
            body.append(f'<figure><img src="{_data_uri(out_dir / b.file)}" alt="{alt}">'
                        f"<figcaption>{alt} ({html.escape(b.file)})</figcaption></figure>")
        elif b.kind == "pre":
            body.append(f"<pre>{html.escape(b.text)}</pre>")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
