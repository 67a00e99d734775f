"""The template store (sandbox, strict variables, content-hash cache, output cap) and message splitting."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatops.errors import TemplateError
from chatops.templating.sandbox import Namespace
from chatops.templating.split import CHANNEL_TEXT_LIMITS, split_message
from chatops.templating.store import Rendered, TemplateStore

OLD = 1_600_000_000  # an mtime far in the past: outside the store's "recently written" window


def write(folder: Path, name: str, text: str, *, mtime: int | None = OLD) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    return folder


@pytest.fixture
def store(templates: Path) -> TemplateStore:
    return TemplateStore(templates)


def render_error(store: TemplateStore, name: str, **variables: object) -> str:
    with pytest.raises(TemplateError) as caught:
        store.render(name, variables)
    return caught.value.message


# --- rendering, versions, errors -------------------------------------------------------------------------------


def test_render_gives_text_template_name_and_version(store: TemplateStore, templates: Path) -> None:
    path = write(templates, "welcome.j2", "Hello {{ user.name }}, welcome to {{ company }}!\n")
    user = Namespace("user", {"name": "Ada"})

    rendered = store.render("welcome.j2", {"user": user, "company": "Northwind"})

    version = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert rendered == Rendered(text="Hello Ada, welcome to Northwind!", template="welcome.j2", version=version)
    assert store.version("welcome.j2") == version


def test_version_is_stable_across_stores_and_follows_content(templates: Path) -> None:
    write(templates, "a.j2", "same text")
    write(templates, "sub/b.j2", "same text")
    write(templates, "c.j2", "other text")

    first, second = TemplateStore(templates), TemplateStore(templates)

    assert first.version("a.j2") == second.version("a.j2") == first.version("sub/b.j2")
    assert first.version("c.j2") != first.version("a.j2")
    assert len(first.version("a.j2")) == 12


def test_undefined_variable_names_file_line_and_variable(store: TemplateStore, templates: Path) -> None:
    write(templates, "tracking.j2", "Your order:\n{{ ordr.status }}\n")

    message = render_error(store, "tracking.j2", order={"status": "shipped"})

    assert message == f"{templates / 'tracking.j2'}:2: 'ordr' is undefined"


def test_missing_provider_attribute_says_what_the_provider_has(store: TemplateStore, templates: Path) -> None:
    write(templates, "t.j2", "{{ user.name }}\n\n{{ user.nmae }}")

    message = render_error(store, "t.j2", user=Namespace("user", {"id": "1", "name": "Ada"}))

    assert message == f"{templates / 't.j2'}:3: 'user' has no attribute 'nmae' (it provides: id, name)"


def test_attribute_access_on_a_mapping_prefers_its_keys(store: TemplateStore, templates: Path) -> None:
    write(templates, "t.j2", "{{ order.items | join(', ') }} / {{ order.keys | length }}")

    rendered = store.render("t.j2", {"order": {"items": ["tea", "mug"], "keys": [1, 2, 3]}})

    assert rendered.text == "tea, mug / 3"


def test_syntax_error_names_file_and_line(store: TemplateStore, templates: Path) -> None:
    write(templates, "broken.j2", "line one\nline two\nHello {{ user.name | }}\n")

    message = render_error(store, "broken.j2")

    assert message.startswith(f"{templates / 'broken.j2'}:3: syntax error: ")


def test_error_inside_an_included_template_points_at_that_file(store: TemplateStore, templates: Path) -> None:
    write(templates, "outer.j2", "Hi\n{% include 'parts/inner.j2' %}")
    write(templates, "parts/inner.j2", "ok\nstill ok\n{{ nope }}")

    message = render_error(store, "outer.j2")

    assert message == f"{templates / 'parts' / 'inner.j2'}:3: 'nope' is undefined"


def test_includes_and_macros_render(store: TemplateStore, templates: Path) -> None:
    write(templates, "macros.j2", "{% macro money(x) %}{{ '%.2f' % x }} EUR{% endmacro %}")
    write(templates, "bill.j2", "{% from 'macros.j2' import money %}Total: {{ money(total) }}")

    assert store.render("bill.j2", {"total": 12.5}).text == "Total: 12.50 EUR"
    assert store.variables_used("bill.j2") == {"total"}


def test_missing_template_and_names_outside_the_folder(store: TemplateStore, templates: Path) -> None:
    with pytest.raises(TemplateError, match=r"template 'nope\.j2' not found in "):
        store.render("nope.j2", {})
    with pytest.raises(TemplateError, match=r"leaves"):
        store.render("../secrets.txt", {})


def test_variables_used_follows_includes(store: TemplateStore, templates: Path) -> None:
    write(templates, "main.j2", "{% set greeting = 'Hi' %}{{ greeting }} {{ user.name }}{% include 'foot.j2' %}")
    write(templates, "foot.j2", "{% for m in conversation.last_messages %}{{ m.text }}{% endfor %}{{ company }}")

    assert store.variables_used("main.j2") == {"user", "conversation", "company"}


# --- cache ---------------------------------------------------------------------------------------------------------


def test_unchanged_file_is_neither_reread_nor_recompiled(store: TemplateStore, templates: Path) -> None:
    write(templates, "t.j2", "{{ n }}")

    texts = [store.render("t.j2", {"n": n}).text for n in range(5)]

    assert texts == ["0", "1", "2", "3", "4"]
    assert store.cache_info() == {"reads": 1, "compiles": 1, "cached": 1}


def test_edited_file_is_picked_up_without_restart(store: TemplateStore, templates: Path) -> None:
    write(templates, "t.j2", "old {{ n }}")
    before = store.render("t.j2", {"n": 1})

    write(templates, "t.j2", "new {{ n }}", mtime=OLD + 60)  # same size: only the stat and the hash tell
    after = store.render("t.j2", {"n": 1})

    assert (before.text, after.text) == ("old 1", "new 1")
    assert before.version != after.version
    assert store.cache_info()["compiles"] == 2


def test_content_reverted_reuses_the_compiled_template(store: TemplateStore, templates: Path) -> None:
    write(templates, "t.j2", "first")
    store.render("t.j2", {})
    write(templates, "t.j2", "other", mtime=OLD + 1)
    store.render("t.j2", {})
    write(templates, "t.j2", "first", mtime=OLD + 2)  # back to the first content: its hash is cached

    assert store.render("t.j2", {}).text == "first"
    assert store.cache_info() == {"reads": 3, "compiles": 2, "cached": 2}


def test_two_quick_writes_of_the_same_size_are_both_seen(store: TemplateStore, templates: Path) -> None:
    # A file written "just now" may share its mtime with the next write; such files are hashed on every render.
    path = write(templates, "t.j2", "AAAA", mtime=None)
    assert store.render("t.j2", {}).text == "AAAA"
    stat = path.stat()
    path.write_text("BBBB", encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the same mtime, as a coarse file system would give

    assert store.render("t.j2", {}).text == "BBBB"


def test_store_renders_from_many_threads(store: TemplateStore, templates: Path) -> None:
    write(templates, "t.j2", "{% for i in range(n) %}{{ i }}{% endfor %}")
    results: dict[int, str] = {}

    def render(n: int) -> None:
        results[n] = store.render("t.j2", {"n": n}).text

    threads = [threading.Thread(target=render, args=(n,)) for n in range(1, 17)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == {n: "".join(str(i) for i in range(n)) for n in range(1, 17)}


# --- sandbox and limits --------------------------------------------------------------------------------------------


def test_user_text_is_data_never_template_source(store: TemplateStore, templates: Path) -> None:
    write(templates, "echo.j2", "You said: {{ message.text }}")
    typed = "{{ 7*7 }} {% for i in range(3) %}x{% endfor %} {{ ''.__class__ }}"

    rendered = store.render("echo.j2", {"message": Namespace("message", {"text": typed})})

    assert rendered.text == f"You said: {typed}"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ items.append(1) }}",
        "{{ user.__dict__ }}",
    ],
)
def test_sandbox_blocks_internals_and_mutation(store: TemplateStore, templates: Path, source: str) -> None:
    write(templates, "evil.j2", source)

    message = render_error(store, "evil.j2", items=[], user=Namespace("user", {"id": "1"}))

    assert message.startswith(f"{templates / 'evil.j2'}:1: ")
    assert "unsafe" in message or "undefined" in message or "no attribute" in message


def test_huge_range_fails_fast(store: TemplateStore, templates: Path) -> None:
    write(templates, "loop.j2", "{% for i in range(10**9) %}{{ i }}{% endfor %}")
    started = time.perf_counter()

    message = render_error(store, "loop.j2")

    assert "MAX_RANGE" in message
    assert time.perf_counter() - started < 1


def test_nested_loops_with_huge_output_stop_at_the_output_cap(store: TemplateStore, templates: Path) -> None:
    write(
        templates,
        "loop.j2",
        "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxx{% endfor %}{% endfor %}",
    )
    started = time.perf_counter()

    message = render_error(store, "loop.j2")

    assert message == f"{templates / 'loop.j2'}: output longer than 65536 characters"
    assert time.perf_counter() - started < 1


def test_nested_loops_without_output_stop_at_the_step_budget(store: TemplateStore, templates: Path) -> None:
    write(templates, "loop.j2", "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    started = time.perf_counter()

    message = render_error(store, "loop.j2")

    assert "too many loop iterations or calls" in message
    assert time.perf_counter() - started < 5


def test_loop_length_and_unsized_iterables_still_work(store: TemplateStore, templates: Path) -> None:
    write(
        templates,
        "t.j2",
        "{% for x in xs %}{{ loop.index }}/{{ loop.length }}{% if not loop.last %} {% endif %}{% endfor %}",
    )

    assert store.render("t.j2", {"xs": ["a", "b", "c"]}).text == "1/3 2/3 3/3"
    assert store.render("t.j2", {"xs": iter("ab")}).text == "1/2 2/2"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ 'x' * 10**9 }}", "result of '*' too large"),
        ("{{ [1, 2] * 10**8 }}", "result of '*' too large"),
        ("{{ 99 ** 99999 }}", "result of '**' too large"),
        ("{{ '%0999999999d' % 1 }}", "result of '%' too large"),
        ("{{ '{:>999999999}'.format(1) }}", "result of '.format()' too large"),
        ("{{ '%09999999d' | format(1) }}", "result of filter 'format' too large"),
        ("{{ 'x' | center(10**9) }}", "filter argument 1000000000 too large"),
    ],
)
def test_allocations_without_bound_are_refused(
    store: TemplateStore, templates: Path, source: str, expected: str
) -> None:
    write(templates, "big.j2", source)

    assert expected in render_error(store, "big.j2")


def test_recursion_fails_with_a_template_error(store: TemplateStore, templates: Path) -> None:
    write(templates, "rec.j2", "{% macro down(n) %}{{ down(n + 1) }}{% endmacro %}{{ down(0) }}")

    assert "recursion too deep" in render_error(store, "rec.j2")


def test_output_cap_is_configurable(templates: Path) -> None:
    write(templates, "t.j2", "{{ text }}")
    store = TemplateStore(templates, max_output_chars=10)

    assert store.render("t.j2", {"text": "x" * 10}).text == "x" * 10
    with pytest.raises(TemplateError, match="output longer than 10 characters"):
        store.render("t.j2", {"text": "x" * 11})


def test_html_is_not_escaped(store: TemplateStore, templates: Path) -> None:
    write(templates, "t.j2", "{{ text }}")

    assert store.render("t.j2", {"text": "Fish & Chips <3"}).text == "Fish & Chips <3"


# --- splitting -----------------------------------------------------------------------------------------------------


def test_channel_limits() -> None:
    assert CHANNEL_TEXT_LIMITS == {"whatsapp": 4096, "messenger": 2000}


def test_short_text_is_one_part_and_blank_text_none() -> None:
    assert split_message("  Hello!  ", limit=10, max_parts=3) == ["Hello!"]
    assert split_message(" \n ", limit=10, max_parts=3) == []


def test_split_prefers_paragraphs_then_sentences_then_words() -> None:
    text = "First paragraph is here.\n\nSecond one. It has two sentences.\n\nThird"

    assert split_message(text, limit=36, max_parts=5) == [
        "First paragraph is here.",
        "Second one. It has two sentences.",
        "Third",
    ]
    assert split_message("One two. Three four five six. Seven.", limit=12, max_parts=9) == [
        "One two.",
        "Three four",
        "five six.",
        "Seven.",
    ]


def test_paragraphs_that_fit_together_stay_together() -> None:
    assert split_message("a b\n\nc d\n\n" + "e" * 8, limit=9, max_parts=5) == ["a b\n\nc d", "eeeeeeee"]


def test_only_a_word_longer_than_the_limit_is_cut() -> None:
    assert split_message("hi abcdefghij ok", limit=4, max_parts=9) == ["hi", "abcd", "efgh", "ij", "ok"]


def test_too_many_parts_end_with_an_ellipsis() -> None:
    parts = split_message("one two three four five six seven eight", limit=10, max_parts=2)

    assert parts == ["one two", "three…"]


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="limit >= 2"):
        split_message("text", limit=1, max_parts=1)


TEXT = st.text(alphabet=st.sampled_from(list("ab c.!?\n\t…\u00a0\u2003\"')é")), max_size=400)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(text=TEXT, limit=st.integers(2, 60), max_parts=st.integers(1, 40))
def test_split_properties(text: str, limit: int, max_parts: int) -> None:
    parts = split_message(text, limit=limit, max_parts=max_parts)
    unlimited = split_message(text, limit=limit, max_parts=10**9)

    assert all(0 < len(part) <= limit for part in parts)
    assert all(part == part.strip() for part in parts)
    assert len(parts) <= max_parts
    if len(unlimited) <= max_parts:
        assert parts == unlimited
        assert "".join("".join(p.split()) for p in parts) == "".join(text.split())  # nothing lost or added
        if all(len(word) <= limit for word in text.split()):
            assert " ".join(parts).split() == text.split()  # and no word was split
    else:
        assert parts[-1].endswith("…")
        assert parts[:-1] == unlimited[: max_parts - 1]


@settings(max_examples=100, derandomize=True, deadline=None)
@given(words=st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=12), min_size=1, max_size=300))
def test_split_at_channel_size_never_splits_words(words: list[str]) -> None:
    text = " ".join(words)

    parts = split_message(text, limit=20, max_parts=1000)

    assert [word for part in parts for word in part.split()] == words
