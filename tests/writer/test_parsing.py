"""Parsing the writer's answer: the strict format, and salvaging everything else without loss."""

from __future__ import annotations

import pytest

from writer.parsing import MATCH_FORMAT, ParsedOutput, parse_output

WELL_FORMED = (
    "<start_working_out>Juno has the shard; Static is afraid. Next: the Glass Market.<end_working_out>\n"
    "<SOLUTION>The Glass Market was built inside a dead aquarium.\n\nOki asked four questions.</SOLUTION>"
)


def test_the_seed_regex_is_unchanged():
    assert MATCH_FORMAT.pattern == (
        r"^[\s]{0,}<start_working_out>.+?<end_working_out>.*?<SOLUTION>(.+?)</SOLUTION>[\s]{0,}$"
    )
    assert MATCH_FORMAT.search(WELL_FORMED).group(1).startswith("The Glass Market")


def test_well_formed_answer():
    parsed = parse_output(WELL_FORMED)
    assert parsed == ParsedOutput(
        reasoning="Juno has the shard; Static is afraid. Next: the Glass Market.",
        text="The Glass Market was built inside a dead aquarium.\n\nOki asked four questions.",
        format_ok=True,
        warning="",
    )


def test_well_formed_with_surrounding_whitespace_and_a_prefilled_tag():
    # The engine returns the prefilled <start_working_out> as part of the text.
    parsed = parse_output(
        "\n  <start_working_out>\nplan\n<end_working_out>\n\n<SOLUTION>\nText.\n</SOLUTION>\n\n"
    )
    assert parsed.format_ok and parsed.reasoning == "plan" and parsed.text == "Text."


def test_search_allows_lines_before_the_answer_as_the_seed_does():
    parsed = parse_output(
        "Sure! Here it is:\n<start_working_out>plan<end_working_out><SOLUTION>Text.</SOLUTION>"
    )
    assert parsed.format_ok and parsed.text == "Text."
    # ...but the reasoning tag must start a line (the ^ anchor).
    inline = parse_output("Sure! <start_working_out>plan<end_working_out><SOLUTION>Text.</SOLUTION>")
    assert not inline.format_ok and inline.text == "Text." and "Sure!" in inline.reasoning


def test_no_tags_keeps_the_raw_output_as_text():
    raw = "Juno ran across the bridge.\n\nThe rain kept falling."
    parsed = parse_output(raw)
    assert parsed.text == raw and parsed.reasoning == "" and not parsed.format_ok
    assert parsed.warning == (
        "The model did not follow the answer format: no <SOLUTION> block; showing its raw output."
    )


def test_unclosed_solution_is_salvaged_with_a_warning():
    parsed = parse_output("<start_working_out>plan<end_working_out><SOLUTION>Juno ran and ran and")
    assert not parsed.format_ok
    assert parsed.reasoning == "plan" and parsed.text == "Juno ran and ran and"
    assert "never closed" in parsed.warning and "cut off" in parsed.warning


def test_no_solution_tags_after_reasoning_shows_the_text_after_it():
    parsed = parse_output("<start_working_out>plan<end_working_out>\nJuno ran.")
    assert (parsed.reasoning, parsed.text, parsed.format_ok) == ("plan", "Juno ran.", False)
    assert "no <SOLUTION> block" in parsed.warning and "after <end_working_out>" in parsed.warning


def test_only_reasoning_is_kept_as_reasoning_with_an_empty_text():
    parsed = parse_output("<start_working_out>I should write about the storm.<end_working_out>")
    assert parsed.reasoning == "I should write about the storm." and parsed.text == ""
    assert "only its reasoning" in parsed.warning and not parsed.format_ok


def test_unclosed_reasoning_keeps_everything_as_text():
    # Usually the model ran out of tokens mid-way; what it wrote is all there is to show.
    parsed = parse_output("<start_working_out>Plan: storm. Juno climbs the stairs, soaked.")
    assert parsed.text == "Plan: storm. Juno climbs the stairs, soaked." and parsed.reasoning == ""
    assert "never closed with <end_working_out>" in parsed.warning


def test_r1_think_block_is_reasoning():
    parsed = parse_output("<think>The reader wants Oki.</think>\nOki fixed the drone with his teeth.")
    assert (
        parsed.reasoning == "The reader wants Oki." and parsed.text == "Oki fixed the drone with his teeth."
    )
    assert "<think>" in parsed.warning and not parsed.format_ok
    # A chat template may open the think block itself: only its end is in the answer.
    prefilled = parse_output("The reader wants Oki.\n</think>\n\nOki fixed the drone.")
    assert prefilled.reasoning == "The reader wants Oki." and prefilled.text == "Oki fixed the drone."


def test_think_block_before_a_well_formed_answer_is_still_format_ok():
    parsed = parse_output(f"<think>Hmm.</think>\n{WELL_FORMED}")
    assert parsed.format_ok and parsed.warning == ""
    assert parsed.reasoning.startswith("Hmm.\n\nJuno has the shard")
    assert parsed.text.startswith("The Glass Market")


def test_tags_in_another_case_are_understood_but_not_format_ok():
    parsed = parse_output("<Start_Working_Out>plan<END_WORKING_OUT><solution>Juno ran.</Solution>")
    assert (parsed.reasoning, parsed.text, parsed.format_ok) == ("plan", "Juno ran.", False)
    assert "not written exactly" in parsed.warning


def test_text_outside_the_solution_is_never_dropped():
    parsed = parse_output(
        "<start_working_out>plan<end_working_out><SOLUTION>Juno ran.</SOLUTION> Hope you like it!"
    )
    assert not parsed.format_ok and parsed.text == "Juno ran."
    assert "Hope you like it!" in parsed.reasoning and "outside <SOLUTION>" in parsed.warning


def test_empty_solution_block():
    # Whitespace-only passes the seed regex (format_ok follows it) but still gets a warning.
    blank = parse_output("<start_working_out>plan<end_working_out><SOLUTION>  </SOLUTION>")
    assert blank.format_ok and blank.text == "" and blank.warning == "The model's <SOLUTION> block is empty."
    empty = parse_output("<start_working_out>plan<end_working_out><SOLUTION></SOLUTION>")
    assert not empty.format_ok and empty.text == "" and empty.reasoning == "plan"
    assert "<SOLUTION> block is empty" in empty.warning


def test_solution_without_reasoning():
    parsed = parse_output("<SOLUTION>Juno ran.</SOLUTION>")
    assert parsed.text == "Juno ran." and not parsed.format_ok and "no <start_working_out>" in parsed.warning


@pytest.mark.parametrize("raw", ["", "   \n\t "])
def test_empty_output(raw):
    assert parse_output(raw) == ParsedOutput("", "", False, "The model returned an empty answer.")


def test_html_and_script_are_kept_as_text_for_the_template_to_escape():
    chapter = 'She typed <b>run</b> and <script>alert("x")</script> & left.'
    parsed = parse_output(f"<start_working_out>plan<end_working_out><SOLUTION>{chapter}</SOLUTION>")
    assert parsed.format_ok and parsed.text == chapter
    assert parse_output(chapter).text == chapter
