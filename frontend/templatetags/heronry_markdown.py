"""``{{ text|markdown }}``: a project's instructions (Markdown, written by researchers) as safe HTML.

Markdown passes raw HTML through, so its output is sanitised with nh3 (ammonia): an allow-list of formatting
tags, links limited to http(s)/mailto and given ``rel="noopener noreferrer nofollow"``, images dropped (the
site's CSP would block outside ones anyway); no script, style or event attribute survives.
"""

from __future__ import annotations

import markdown as markdown_lib
import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "b", "i", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "kbd", "del", "sup", "sub",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}, "ol": {"start"}}
MAX_CHARS = 50_000


def render_markdown(text: str) -> str:
    html = markdown_lib.markdown(text[:MAX_CHARS], extensions=["tables", "sane_lists"], output_format="html")
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


@register.filter(name="markdown")
def markdown_filter(text: str | None) -> SafeString:
    return mark_safe(render_markdown(text or ""))  # sanitised by nh3 in render_markdown
