"""Every way the sandbox offers to build a large string or list stops at the same limits, before the memory is
taken: each template below tried to build 20-100 MB (one bypass of the old output budget reached 9.5 GB) and is
rendered through the real TemplateStore, which must answer with a TemplateError quickly and without allocating
more than a few MB."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from chatops.errors import TemplateError
from chatops.templating.store import TemplateStore

PEAK_BYTES = 16 * 1024 * 1024  # what a refused render may allocate at most (the values it was allowed to build)
SECONDS = 3.0

LOOP = "{% set ns = namespace(s='x', l=[1], n=3) %}{% for i in range(ROUNDS) %}STEP{% endfor %}"


def loop(step: str, rounds: int) -> str:
    return LOOP.replace("ROUNDS", str(rounds)).replace("STEP", step)


BIG = "{% set s = 'x' * 100000 %}{% set l = [s] * 500 %}"  # 500 references to one 100,000-character string

BYPASSES = {
    # methods of str and int
    "str.replace": ("{% set x = ('a' * 10000).replace('a', 'b' * 5000) %}", "'.replace()' too large"),
    "str.ljust": ("{% set x = 'x'.ljust(50000000) %}", "'.ljust()' too large"),
    "str.rjust": ("{% set x = 'x'.rjust(50000000) %}", "'.rjust()' too large"),
    "str.center": ("{% set x = 'x'.center(50000000) %}", "'.center()' too large"),
    "str.zfill": ("{% set x = '1'.zfill(50000000) %}", "'.zfill()' too large"),
    "str.expandtabs": (r"{% set x = ('\t' * 1000).expandtabs(50000) %}", "'.expandtabs()' too large"),
    "str.translate": ("{% set x = ('a' * 10000).translate({97: 'b' * 5000}) %}", "'.translate()' too large"),
    "str.join": (BIG + "{% set x = ''.join(l) %}", "'.join()' too large"),
    "int.to_bytes": ("{% set x = (1).to_bytes(50000000, 'big') %}", "'.to_bytes()' too large"),
    # str.format with nested widths and precisions
    "format nested width": ("{% set x = '{:>{w}}'.format(1, w=50000000) %}", "'.format()' too large"),
    "format nested precision": ("{% set x = '{:.{p}f}'.format(1.0, p=50000000) %}", "'.format()' too large"),
    "format positional width": ("{% set x = '{0:{1}}'.format(1, 50000000) %}", "'.format()' too large"),
    "format_map width": ("{% set x = '{x:>{w}}'.format_map({'x': 1, 'w': 50000000}) %}", "'.format()' too large"),
    "format many fields": (BIG + "{% set x = ('{0}' * 500).format(s) %}", "'.format()' too large"),
    "format of a list": (BIG + "{% set x = '{}'.format(l) %}", "'.format()' too large"),
    # printf-style % with * widths
    "%*d": ("{% set x = '%*d' % (50000000, 1) %}", "'%' too large"),
    "%.*f": ("{% set x = '%.*f' % (50000000, 1.0) %}", "'%' too large"),
    "%s of a list": (BIG + "{% set x = '%s' % (l,) %}", "'%' too large"),
    "format filter %*d": ("{% set x = '%*d' | format(50000000, 1) %}", "filter 'format' too large"),
    "format filter of a list": (BIG + "{% set x = '%s' | format(l) %}", "filter 'format' too large"),
    # operators in loops
    "~ doubling in a loop": (loop("{% set ns.s = ns.s ~ ns.s %}", 26), "'~' too large"),
    "+ doubling a string in a loop": (loop("{% set ns.s = ns.s + ns.s %}", 26), "'+' too large"),
    "+ doubling a list in a loop": (loop("{% set ns.l = ns.l + ns.l %}", 23), "'+' too large"),
    "* doubling in a loop": (loop("{% set ns.s = ns.s * 2 %}", 26), "'*' too large"),
    "* squaring an int in a loop": (loop("{% set ns.n = ns.n * ns.n %}", 20), "'*' too large"),
    "~ of a list": (BIG + "{% set x = l ~ '' %}", "'~' too large"),
    "+ keeping many long strings": (
        "{% set ns = namespace(l=[]) %}{% for i in range(1000) %}"
        "{% set ns.l = ns.l + [('x' * 99990) ~ i] %}{% endfor %}",
        "built more than 20,000,000",
    ),
    # filters
    "join filter": (BIG + "{% set x = l | join %}", "filter 'join' too large"),
    "join filter of a generator": (BIG + "{% set x = l | map('string') | join %}", "filter 'join' too large"),
    "string filter of a list": (BIG + "{% set x = l | string %}", "filter 'string' too large"),
    "replace filter": ("{% set x = ('a' * 10000) | replace('a', 'b' * 5000) %}", "filter 'replace' too large"),
    "indent filter": (r"{% set x = ('a\n' * 1000) | indent('x' * 50000) %}", "filter 'indent' too large"),
    "wordwrap filter": ("{% set x = ('a ' * 25000) | wordwrap(1, wrapstring='x' * 1000) %}", "too large"),
    "sum of lists": ("{% set x = ([['x'] * 1000] * 1000) | sum(start=[]) %}", "filter 'sum' too large"),
    "forceescape": ("{% set x = ('\"' * 30000) | forceescape %}", "filter 'forceescape' too large"),
    "urlencode": ("{% set x = ('\u00e9' * 30000) | urlencode %}", "filter 'urlencode' too large"),
    "lipsum": ("{% set x = lipsum(20000) %}", "lipsum() too large"),
    # output that Jinja joins in memory (macros, set blocks, includes in loops)
    "output of a list": (BIG + "{{ l }}", "an output value too large"),
    "macro output in a loop": (
        BIG + "{% macro m() %}{% for i in range(500) %}{{ s }}{% endfor %}{% endmacro %}{% set x = m() %}",
        "built more than",
    ),
    "set block in a loop": (
        BIG + "{% set x %}{% for i in range(500) %}{{ s }}{% endfor %}{% endset %}",
        "built more than",
    ),
    "literal text in a loop in a macro": (
        "{% macro m() %}{% for i in range(5000) %}" + "y" * 10000 + "{% endfor %}{% endmacro %}{% set x = m() %}",
        "built more than",
    ),
    "include in a loop in a macro": (
        "{% macro m() %}{% for i in range(5000) %}{% include 'ten_k.j2' %}{% endfor %}{% endmacro %}{% set x = m() %}",
        "built more than",
    ),
}


@pytest.fixture
def store(tmp_path: Path) -> TemplateStore:
    (tmp_path / "ten_k.j2").write_text("z" * 10000)
    return TemplateStore(tmp_path)


@pytest.mark.parametrize(("source", "expected"), list(BYPASSES.values()), ids=list(BYPASSES))
def test_a_large_value_is_refused_before_it_is_built(
    store: TemplateStore, tmp_path: Path, source: str, expected: str
) -> None:
    (tmp_path / "big.j2").write_text(source)
    started = time.perf_counter()
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError) as caught:
            store.render("big.j2", {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert caught.value.message.startswith(f"{tmp_path / 'big.j2'}:1: "), caught.value.message
    assert expected in caught.value.message
    assert caught.value.hint == "bound the loop or the size of the value"
    assert peak < PEAK_BYTES, f"{peak:,} bytes allocated"
    assert time.perf_counter() - started < SECONDS


def test_ordinary_templates_are_not_limited(store: TemplateStore, tmp_path: Path) -> None:
    (tmp_path / "ok.j2").write_text(
        "{% set ns = namespace(text='') %}"
        "{% for o in orders %}{% set ns.text = ns.text ~ o.id ~ ': ' ~ o.status ~ '\n' %}{% endfor %}"
        "{{ ns.text }}{{ orders | map(attribute='id') | join(', ') }} "
        "{{ '{:>6}|{:<6}|{:^6}'.format('a', 'b', 'c') }} {{ '%5.1f%%' % 99.5 }} {{ 'x' | center(9) }} "
        "{{ ('ab' * 3) | replace('b', 'c') }} {{ 'Total: %d' | format(orders | length) }} {{ 7 * 6 }} {{ 2 ** 10 }}"
        "{% macro row(o) %}[{{ o.id | string | rjust(4) if false else o.id }}]{% endmacro %}"
        "{% for o in orders %}{{ row(o) }}{% endfor %}"
    )
    orders = [{"id": i, "status": "shipped"} for i in range(200)]

    text = store.render("ok.j2", {"orders": orders}).text

    assert text.startswith("0: shipped\n1: shipped\n")
    assert "     a|b     |  c     99.5%     x     acacac Total: 200 42 1024" in text
    assert text.endswith("[198][199]")
