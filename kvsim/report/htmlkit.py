"""The parts every kvsim HTML report is made of: one self-contained page, no scripts, no network.

* :func:`png` turns a matplotlib figure into an ``<img>`` with the PNG inlined as base64;
* :func:`table` renders a DataFrame that fits the page: column names in words
  (:mod:`kvsim.labels`), numbers to 4 significant figures, at most
  ``max_cols`` columns (the rest are in the CSV the command also writes), and a
  horizontal scroll box as the last resort instead of a page wider than the window;
* :func:`page` wraps sections into the document, with the headline box first.
"""
from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone

import pandas as pd

from kvsim.labels import label

CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}"
       "img{max-width:100%;height:auto;border:1px solid #ddd}table{border-collapse:collapse;font-size:13px}"
       "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}th{background:#f4f4f4}"
       ".rec{background:#fff3cd;padding:1em;border-left:5px solid #f0ad4e}"
       ".fit{max-width:100%;overflow-x:auto}code{background:#f4f4f4;padding:0 3px}"
       ".note{color:#555;font-size:90%}pre{white-space:pre-wrap;background:#f8f8f8;padding:.5em}")

esc = html.escape


def png(fig, alt: str = "plot", tight: bool = True) -> str:
    """``<img>`` of ``fig`` (closed afterwards), PNG bytes inlined as base64; ``tight=False`` keeps the layout."""
    from kvsim.plots import plt
    buf = io.BytesIO()
    if tight:
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" alt="{esc(alt)}">'


def _cell(v) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(df: pd.DataFrame, cols: list[str] | None = None, *, max_cols: int = 12, max_rows: int = 200,
          words: bool = True, highlight=None) -> str:
    """An HTML table of ``df[cols]`` that fits the page (module doc); ``highlight``: a boolean mask of rows."""
    cols = [c for c in (cols or list(df.columns)) if c in df.columns][:max_cols]
    rows = df[cols].head(max_rows)
    head = "".join(f"<th>{esc(label(c) if words else str(c))}</th>" for c in cols)
    body = []
    for i, (_, r) in enumerate(rows.iterrows()):
        mark = highlight is not None and bool(list(highlight)[i])
        style = ' style="background:#fff3cd;font-weight:bold"' if mark else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{esc(_cell(r[c]))}</td>" for c in cols) + "</tr>")
    more = (f'<p class="note">{len(df) - max_rows} more rows in the CSV.</p>' if len(df) > max_rows else "")
    return f'<div class="fit"><table><tr>{head}</tr>{"".join(body)}</table></div>{more}'


def key_values(pairs: list[tuple[str, str]]) -> str:
    """A two-column table of (what, value) lines, e.g. a run's summary."""
    rows = "".join(f'<tr><th style="text-align:left">{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in pairs)
    return f'<div class="fit"><table>{rows}</table></div>'


def page(title: str, subtitle: str, headline: str, reason: str, sections: list[tuple[str, str]]) -> str:
    """The whole document: title, a subtitle line, the headline box with its reason, then ``(heading, html)``
    sections in order (``html`` is trusted markup built with :func:`png`, :func:`table` and ``esc``)."""
    body = "".join(f"<h2>{esc(h)}</h2>{content}" for h, content in sections)
    when = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>{CSS}</style></head><body>
<h1>{esc(title)}</h1>
<p>{esc(subtitle)}<br><span class="note">Generated {when} by kvsim.</span></p>
<div class="rec"><h2>{esc(headline)}</h2><p>{esc(reason)}</p></div>
{body}
</body></html>
"""
