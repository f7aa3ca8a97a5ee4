"""The chat and preference readers of sft.py / jsft.py on fixtures in the real layouts (DESIGN.md
§4), and every reader of the project on malformed files."""

import json
import os
import shutil
import sys

import pytest

import readers
from readers import (
    PreferencePair,
    hh_to_messages,
    read_conversations,
    read_documents,
    read_hh_rlhf,
    read_mc,
    read_messages_jsonl,
    read_preferences,
    read_prompts,
)

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "readers")
HH = os.path.join(FIXTURES, "hh_rlhf_sample.jsonl")
UF = os.path.join(FIXTURES, "ultrafeedback_sample.jsonl")
MESSAGES = os.path.join(FIXTURES, "messages_sample.jsonl")
GENERIC = os.path.join(FIXTURES, "generic_sample.jsonl")


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def write_lines(tmp_path, lines, name="data.jsonl"):
    path = tmp_path / name
    path.write_text(
        "".join(
            (json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else x) + "\n"
            for x in lines
        ),
        encoding="utf-8",
    )
    return str(path)


# ----------------------------------------------------------------------------- HH-RLHF
def test_hh_to_messages_multi_turn_with_blank_lines_inside_a_reply():
    text = (
        "\n\nHuman: List two fruits.\n\nAssistant: Here:\n\n- apple\n- pear \n\nHuman: Thanks!"
        "\n\nAssistant: You're welcome. "
    )
    assert hh_to_messages(text) == [
        user("List two fruits."),
        assistant("Here:\n\n- apple\n- pear"),
        user("Thanks!"),
        assistant("You're welcome."),
    ]


def test_hh_to_messages_missing_or_empty_final_assistant_ends_with_the_user_turn():
    expected = [user("a"), assistant("b"), user("c")]
    assert hh_to_messages("\n\nHuman: a\n\nAssistant: b\n\nHuman: c") == expected
    assert hh_to_messages("\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant:") == expected
    # no leading blank line
    assert hh_to_messages("Human: a\n\nAssistant: b") == [user("a"), assistant("b")]


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("hello", "no .* turns found"),
        ("preamble\n\nHuman: a\n\nAssistant: b", "before the first"),
        ("\n\nAssistant: a\n\nHuman: b", "alternate"),
        ("\n\nHuman: a\n\nHuman: b", "alternate"),
        ("\n\nHuman: \n\nAssistant: b", "empty"),
        ("\n\nHuman: a\n\nAssistant: \n\nHuman: c", "empty"),
    ],
)
def test_hh_to_messages_rejects_malformed_transcripts(text, complaint):
    with pytest.raises(ValueError, match=complaint):
        hh_to_messages(text)


def test_read_hh_rlhf_real_layout_fixture():
    chosen = read_hh_rlhf(HH)
    assert len(chosen) == 5
    assert chosen[0] == [
        user("What are some good vegetables to grow in a small garden?"),
        assistant("Tomatoes, lettuce and herbs like basil are easy to start with."),
        user("Which of those needs the most sun?"),
        assistant("Tomatoes need the most sun, at least six hours a day."),
    ]
    assert chosen[1][-1] == assistant(
        "Put the egg in boiling water for about nine minutes, then cool it in cold water."
    )
    assert chosen[2][1]["content"] == "Here is a list:\n\n- sunscreen\n- a towel\n- water"
    assert [len(c) for c in chosen] == [4, 2, 6, 4, 3]
    # missing final Assistant turn
    assert chosen[4][-1] == user("How long does it take to climb it?")
    rejected = read_hh_rlhf(HH, side="rejected")
    assert rejected[0][-1] == assistant("I don't know.") and rejected[0][:-1] == chosen[0][:-1]
    assert rejected[4] == chosen[4]  # empty final "Assistant:" -> ends with the user turn
    assert rejected[3][-1] == assistant("모르겠어요.")
    with pytest.raises(ValueError, match="side"):
        read_hh_rlhf(HH, side="both")


def test_read_hh_rlhf_bad_record_names_file_and_line(tmp_path, capsys):
    good = {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}
    path = write_lines(tmp_path, [good, {"chosen": 3, "rejected": "x"}, good, "{not json"])
    with pytest.raises(ValueError, match=r"data\.jsonl:2: \"chosen\" must be a transcript string"):
        read_hh_rlhf(path)
    assert len(read_hh_rlhf(path, skip_bad=True)) == 2
    err = capsys.readouterr().err
    assert "skipped 2 bad record(s)" in err and "data.jsonl:2" in err


# ----------------------------------------------------------------------------- messages
def test_read_messages_jsonl_fixture():
    convs = read_messages_jsonl(MESSAGES)
    assert len(convs) == 3
    assert convs[0][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert convs[1][-1] == assistant("7 더하기 1은 8입니다.") and len(convs[1]) == 4
    assert convs[2][-1]["content"].count("\n") == 2


@pytest.mark.parametrize(
    "record, complaint",
    [
        ({"text": "hi"}, '"messages" must be a non-empty list'),
        ({"messages": []}, '"messages" must be a non-empty list'),
        ({"messages": [{"role": "bot", "content": "x"}]}, r'messages\[0\]: "role" must be one of'),
        (
            {"messages": [user("a"), {"role": "assistant", "content": 5}]},
            r'messages\[1\]: "content" must be a string',
        ),
        ({"messages": [user("a")]}, "no assistant turn"),
        (
            {"messages": [user("a"), {"role": "system", "content": "s"}, assistant("b")]},
            "system message may only come first",
        ),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_read_messages_jsonl_bad_records(tmp_path, capsys, record, complaint):
    good = {"messages": [user("hi"), assistant("hello")]}
    path = write_lines(tmp_path, [good, "", good, record])
    with pytest.raises(ValueError, match=r"data\.jsonl:4: .*" + complaint):
        read_messages_jsonl(path)
    assert read_messages_jsonl(path, skip_bad=True) == [good["messages"]] * 2
    assert "skipped 1 bad record(s), the first: " in capsys.readouterr().err


def test_invalid_json_line_reported():
    with pytest.raises(ValueError, match=r":1: not valid JSON"):
        read_messages_jsonl(os.path.join(FIXTURES, "..", "..", "test_readers.py"))


# ----------------------------------------------------------------------------- preferences
def test_read_preferences_hh_layout():
    with pytest.raises(
        ValueError, match=r"hh_rlhf_sample\.jsonl:5: \"chosen\" has no final Assistant reply"
    ):
        read_preferences(HH)
    pairs = read_preferences(HH, skip_bad=True)
    assert len(pairs) == 4
    assert pairs[0] == PreferencePair(
        [
            user("What are some good vegetables to grow in a small garden?"),
            assistant("Tomatoes, lettuce and herbs like basil are easy to start with."),
            user("Which of those needs the most sun?"),
        ],
        "Tomatoes need the most sun, at least six hours a day.",
        "I don't know.",
    )
    assert (
        pairs[1].chosen.endswith("cold water.")
        and pairs[1].rejected == "Eggs are laid by chickens."
    )
    assert pairs[2].context[-1] == user("Great.") and len(pairs[2].context) == 5
    assert pairs[3].rejected == "모르겠어요."


def test_read_preferences_hh_prefix_mismatch_and_identical_pair(tmp_path, capsys):
    a = "\n\nHuman: q\n\nAssistant: good"
    path = write_lines(tmp_path, [{"chosen": a, "rejected": "\n\nHuman: other\n\nAssistant: bad"}])
    with pytest.raises(ValueError, match=":1: .*differ before their final"):
        read_preferences(path)
    path = write_lines(tmp_path, [{"chosen": a, "rejected": a}], name="same.jsonl")
    assert read_preferences(path) == []
    assert "1 record(s) gave nothing" in capsys.readouterr().err


def test_read_preferences_ultrafeedback_overall():
    pairs = read_preferences(UF)
    assert len(pairs) == 3  # the all-tied record gives nothing
    # record 1: mean ratings 4.5, 7/3 (the "N/A" is left out), 5.0, 3.0 -> chosen is the gpt-4 reply
    assert pairs[0].context == [user("Name three primary colors.")]
    assert pairs[0].chosen == "The traditional primary colors are red, yellow and blue."
    assert pairs[0].rejected in {
        "Red, yellow and blue.",
        "Green.",
        "Red, green, blue, and also many others.",
    }
    assert (
        pairs[0].principle == "overall"
        and "helpfulness: Why gpt-4 gets 5 for helpfulness." in pairs[0].chosen_rationale
    )
    # record 2: completions 0 and 2 tie at 4.5 -> the lower index wins; only completion 1 is worse
    assert (pairs[1].chosen, pairs[1].rejected) == ("Chat.", "Chien.")
    # record 4: annotations wrapped in lists, one Rating a number
    assert (pairs[2].chosen, pairs[2].rejected) == ("4.", "5.")


def test_read_preferences_ultrafeedback_rejected_is_a_seeded_draw_among_strictly_worse():
    drawn = {read_preferences(UF, seed=s)[0].rejected for s in range(40)}
    assert drawn == {"Red, yellow and blue.", "Green.", "Red, green, blue, and also many others."}
    assert read_preferences(UF, seed=3) == read_preferences(UF, seed=3)


def test_read_preferences_ultrafeedback_per_principle():
    pairs = read_preferences(UF, per_principle=True)
    by = {(p.context[0]["content"], p.principle): p for p in pairs}
    # record 1 (ratings per completion: h 4 2 5 3, honesty 5 N/A 5 3, if 4 3 5 3, t 5 2 5 3)
    honesty = by["Name three primary colors.", "honesty"]
    assert (honesty.chosen, honesty.rejected) == (
        "Red, yellow and blue.",
        "Red, green, blue, and also many others.",
    )
    assert honesty.chosen_rationale == "honesty of alpaca-7b: rated 5."
    assert honesty.rejected_rationale == "honesty of llama-2-7b-chat: rated 3."
    # helpfulness and truthfulness also rate a Type, which their "Rationale" explains
    helpful = by["Name three primary colors.", "helpfulness"]
    assert helpful.chosen_rationale == "Why gpt-4 gets 5 for helpfulness."
    # record 2 (h 5 1 4, honesty 4 4 5, if 5 2 4, t 4 1 5)
    assert by["Translate 'cat' into French.", "honesty"].chosen == "Le chat."
    assert by["Translate 'cat' into French.", "instruction_following"].chosen == "Chat."
    assert by["Translate 'cat' into French.", "truthfulness"].rejected in {"Chat.", "Chien."}
    assert not any(p.context[0]["content"] == "Say hello." for p in pairs)
    assert len(pairs) == 4 + 4 + 4
    for p in pairs:
        assert p.chosen != p.rejected and p.chosen_rationale and p.rejected_rationale


@pytest.mark.parametrize(
    "completion, complaint",
    [
        (
            {"response": "x"},
            r'completions\[0\] needs a "response" string and an "annotations" object',
        ),
        (
            {"response": "x", "annotations": {"honesty": {"Rationale": "r"}}},
            r"annotations\.honesty: expected",
        ),
        (
            {"response": "x", "annotations": {"honesty": {"Rating": "five", "Rationale": "r"}}},
            'must be a number or "N/A"',
        ),
    ],
)
def test_read_preferences_ultrafeedback_bad_records(tmp_path, completion, complaint):
    path = write_lines(tmp_path, [{"instruction": "q", "completions": [completion]}])
    with pytest.raises(ValueError, match=r"data\.jsonl:1: .*" + complaint):
        read_preferences(path)


def test_read_preferences_ultrafeedback_binarized_layout(tmp_path):
    """HuggingFaceH4/ultrafeedback_binarized: "prompt", chosen / rejected as whole conversations,
    and "messages" holding the chosen one (ending with its reply)."""
    q = "Name a fruit."
    record = {
        "prompt": q,
        "prompt_id": "0",
        "chosen": [user(q), assistant("An apple.")],
        "rejected": [user(q), assistant("A chair.")],
        "messages": [user(q), assistant("An apple.")],
        "score_chosen": 9.0,
        "score_rejected": 2.0,
    }
    pairs = read_preferences(write_lines(tmp_path, [record]))
    assert pairs == [PreferencePair([user(q)], "An apple.", "A chair.")]
    # TRL's conversational rows with an implicit prompt: two conversations, no prompt field
    trl = {"chosen": record["chosen"], "rejected": record["rejected"]}
    assert read_preferences(write_lines(tmp_path, [trl])) == pairs


def test_read_preferences_generic_layout():
    pairs = read_preferences(GENERIC)
    assert pairs[0] == PreferencePair([user("What is the capital of France?")], "Paris.", "Lyon.")
    assert pairs[1] == PreferencePair(
        [user("Hi"), assistant("Hello!"), user("Tell me a fruit.")],
        "An apple.",
        "A chair.",
        "correctness",
        "An apple is a fruit.",
        "A chair is not a fruit.",
    )


@pytest.mark.parametrize(
    "record, complaint",
    [
        ({"answer": "x"}, "unknown layout"),
        ({"prompt": 3, "chosen": "a", "rejected": "b"}, '"prompt" must be a string'),
        ({"prompt": "q", "chosen": ["a"], "rejected": "b"}, r'chosen\[0\]: "role" must be one of'),
        (
            {"prompt": "q", "chosen": "a", "rejected": [user("b")]},
            '"rejected" must be a string or messages ending',
        ),
        (
            {
                "messages": [user("q"), assistant("a"), assistant("b")],
                "chosen": "b",
                "rejected": "c",
            },
            "must end with a user turn",
        ),
    ],
)
def test_read_preferences_generic_bad_records(tmp_path, record, complaint):
    path = write_lines(tmp_path, [record])
    with pytest.raises(ValueError, match=r"data\.jsonl:1: .*" + complaint):
        read_preferences(path)


# ----------------------------------------------------------------------------- prompts
def test_read_prompts_accepts_every_layout(tmp_path):
    path = write_lines(
        tmp_path,
        [
            {"messages": [user("a"), assistant("b"), user("c")]},
            {"messages": [user("a"), assistant("b")]},  # the final reply is dropped
            {"prompt": "p"},
            {"instruction": "i", "completions": []},
            {
                "chosen": "\n\nHuman: x\n\nAssistant: y\n\nHuman: z\n\nAssistant: w",
                "rejected": "...",
            },
        ],
    )
    assert read_prompts(path) == [
        [user("a"), assistant("b"), user("c")],
        [user("a")],
        [user("p")],
        [user("i")],
        [user("x"), assistant("y"), user("z")],
    ]
    assert read_prompts(HH)[4] == [
        user("What is the tallest mountain in the world?"),
        assistant("Mount Everest, at about 8,849 meters."),
        user("How long does it take to climb it?"),
    ]
    assert read_prompts(UF)[0] == [user("Name three primary colors.")]
    assert read_prompts(MESSAGES)[0] == [
        {"role": "system", "content": "You are a helpful assistant."},
        user("Hi!"),
    ]


@pytest.mark.parametrize(
    "record, complaint",
    [
        ({"text": "x"}, "unknown layout"),
        ({"prompt": "  "}, "non-empty string"),
        (
            {"messages": [{"role": "system", "content": "s"}, assistant("a")]},
            "must end with a user turn",
        ),
    ],
)
def test_read_prompts_bad_records(tmp_path, capsys, record, complaint):
    path = write_lines(tmp_path, [{"prompt": "ok"}, record])
    with pytest.raises(ValueError, match=r"data\.jsonl:2: .*" + complaint):
        read_prompts(path)
    assert read_prompts(path, skip_bad=True) == [[user("ok")]]
    assert "skipped 1 bad record(s)" in capsys.readouterr().err


# ------------------------------------------------------------------------ every reader, bad input
def read_corpus_jsonl(path, skip_bad):
    return read_documents([path], skip_bad=skip_bad)


def read_data_jsonl(path, skip_bad):
    skipped = []
    try:
        docs = readers.read_file(path, skip_bad, skipped)
    except readers.DataError as e:
        raise ValueError(str(e)) from None
    if skipped:
        print(f"skipped {len(skipped)} bad record(s), the first: {skipped[0]}", file=sys.stderr)
    return docs


HH_OK = {"chosen": "\n\nHuman: q\n\nAssistant: good", "rejected": "\n\nHuman: q\n\nAssistant: bad"}
# name: (reader, good record, [(bad record, what the error says)]): wrong types, empty lists, roles
READERS = {
    "messages": (
        read_messages_jsonl,
        {"messages": [user("hi"), assistant("hello")]},
        [
            ({"messages": []}, "non-empty list"),
            ({"messages": "hi"}, "non-empty list"),
            ({"messages": [{"role": "bot", "content": "x"}]}, '"role" must be one of'),
        ],
    ),
    "hh_rlhf": (
        read_hh_rlhf,
        HH_OK,
        [
            ({"chosen": 3, "rejected": "x"}, "must be a transcript string"),
            ({"chosen": "\n\nRobot: hi", "rejected": "x"}, "no .* turns found"),
        ],
    ),
    "preferences": (
        read_preferences,
        HH_OK,
        [
            ({"instruction": "q", "completions": []}, '"completions" is empty'),
            ({"instruction": "q", "completions": "abc"}, '"completions" a list'),
            (
                {"prompt": "q", "chosen": [{"role": "bot", "content": "a"}], "rejected": "b"},
                '"role" must be one of',
            ),
        ],
    ),
    "prompts": (
        read_prompts,
        {"prompt": "hello"},
        [
            ({"messages": []}, "non-empty list"),
            ({"prompt": 3}, "non-empty string"),
            ({"messages": [{"role": "robot", "content": "x"}]}, '"role" must be one of'),
        ],
    ),
    "multiple_choice": (
        read_mc,
        {"question": "q?", "choices": ["a", "b"], "answer": 1},
        [
            ({"question": "q?", "choices": [], "answer": 0}, "choices must be 2 to"),
            ({"question": "q?", "choices": ["a", "b"], "answer": [1]}, '"answer" must be'),
        ],
    ),
    "tokenizer_corpus": (
        read_corpus_jsonl,
        {"text": "some text", "lang": "en"},
        [({"text": 3}, '"text" string'), ({"text": "x", "lang": 5}, '"lang" must be a group')],
    ),
    "data_corpus": (
        read_data_jsonl,
        {"text": "some text", "lang": "en"},
        [
            ({"text": ["x"]}, '"text" string'),
            ({"text": "x", "lang": "en/us"}, r'"lang" must be a group name .*\'en/us\''),
        ],
    ),
}
NOT_UTF8 = b'{"text": "caf\xe9", "prompt": "caf\xe9"}'  # latin-1, as a Windows export writes it


@pytest.mark.parametrize("name", READERS)
def test_every_reader_names_file_and_line_and_skip_bad_skips_the_bad(tmp_path, capsys, name):
    reader, good, bad = READERS[name]
    lines = [b"\xef\xbb\xbf" + json.dumps(good).encode()]  # a BOM on the first line is fine
    wrong = [
        (NOT_UTF8, r"not valid UTF-8 \(byte b'\\xe9'"),
        (b'[{"role": "us', "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
    ]
    wrong += [(json.dumps(r).encode(), what) for r, what in bad]
    for record, what in wrong:  # good and bad lines alternate: line 2, 4, .. are bad
        lines += [record, json.dumps(good, ensure_ascii=False).encode()]
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    for n, (record, what) in enumerate(wrong):
        only = tmp_path / f"one_bad_{n}.jsonl"  # a valid file with one bad line
        only.write_bytes(b"\n".join(lines[:1] + [record] + lines[1:2]) + b"\n")
        with pytest.raises(ValueError, match=rf"one_bad_{n}\.jsonl:2: .*{what}"):
            reader(str(only), skip_bad=False)
    good_only = tmp_path / "good.jsonl"
    good_only.write_bytes((json.dumps(good) + "\n").encode() * (len(wrong) + 1))
    expected = reader(str(good_only), skip_bad=False)
    assert len(expected) == len(wrong) + 1
    capsys.readouterr()
    assert reader(str(path), skip_bad=True) == expected
    err = capsys.readouterr().err
    assert f"skipped {len(wrong)} bad record(s), the first: {path}:2: not valid UTF-8" in err


@pytest.mark.parametrize("reader", [lambda p: read_documents([p]), readers.read_text_file])
def test_corpus_text_that_is_not_utf8_names_file_and_line(tmp_path, reader):
    path = tmp_path / "notes.txt"
    path.write_bytes("first\n\nsecond 문서\ncaf\xe9\n".encode("utf-8")[:-6] + b"caf\xe9\n")
    with pytest.raises((ValueError, readers.DataError), match=r"notes\.txt:4: not valid UTF-8"):
        reader(str(path))
    path.write_bytes(b"\xef\xbb\xbf" + "첫 문서\n".encode())
    assert "\ufeff" not in str(reader(str(path)))  # a BOM is not text


def test_sft_layout_detection_survives_a_bad_first_line(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_bytes(NOT_UTF8 + b"\n" + json.dumps(HH_OK).encode() + b"\n")
    with pytest.raises(ValueError, match=r"chats\.jsonl:1: not valid UTF-8"):
        read_conversations(str(path))
    assert read_conversations(str(path), skip_bad=True) == [[user("q"), assistant("good")]]


def test_atomic_write_dir_swaps_in_a_complete_folder_and_keeps_the_old_on_failure(tmp_path):
    out = tmp_path / "data"

    def write(text, fail=False):
        def fill(folder):
            with open(os.path.join(folder, "a.txt"), "w") as fh:
                fh.write(text)
            if fail:
                raise RuntimeError("disk full")

        return fill

    readers.atomic_write_dir(str(out), write("first"))
    assert (out / "a.txt").read_text() == "first"
    with pytest.raises(RuntimeError, match="disk full"):
        readers.atomic_write_dir(str(out), write("second", fail=True))
    assert (out / "a.txt").read_text() == "first"  # the good folder is untouched
    readers.atomic_write_dir(str(out), write("third"))
    assert (out / "a.txt").read_text() == "third"
    assert sorted(os.listdir(tmp_path)) == ["data"]  # no temporary or old folder left behind


def test_read_preference_files_tasks_reads_both_task_files_in_order(tmp_path):
    """jsft.py's --prefs: 'tasks' is the task world's prefs_train.jsonl then ultrafeedback_train
    .jsonl; a file list is read in its order; the options reach every file; a missing file is
    named with what to do before anything is read."""
    shutil.copy(GENERIC, tmp_path / "prefs_train.jsonl")
    shutil.copy(UF, tmp_path / "ultrafeedback_train.jsonl")
    both = readers.read_preference_files("tasks", tasks_dir=str(tmp_path), seed=3)
    assert both == read_preferences(GENERIC) + read_preferences(UF, seed=3)
    per = readers.read_preference_files(f"{UF},{GENERIC}", per_principle=True)
    assert per == read_preferences(UF, per_principle=True) + read_preferences(GENERIC)
    os.remove(tmp_path / "ultrafeedback_train.jsonl")
    with pytest.raises(SystemExit, match=r"ultrafeedback_train.jsonl not found: run `python tasks"):
        readers.read_preference_files("tasks", tasks_dir=str(tmp_path))


def test_fitting_prompts_leaves_out_prompts_with_no_room_for_a_reply(tmp_path, capsys):
    """self_judge.py and chat.py sample max_new_tokens after each prompt: a prompt whose rendering
    leaves less room than that in max_len is left out and counted; none left, or no file, stops
    with what to do."""

    class CharTok:  # one token per character of each turn, plus one per turn
        def render_chat(self, messages, add_generation_prompt):
            return [0] * sum(len(m["content"]) + 1 for m in messages), None

    path = tmp_path / "prompts.jsonl"
    lines = [{"prompt": "x" * 10}, {"prompt": "y" * 30}, {"prompt": "z" * 21}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    fits = readers.fitting_prompts(str(path), CharTok(), 8, 30, "prompts")  # room: 22 tokens
    assert fits == [
        [{"role": "user", "content": "x" * 10}],
        [{"role": "user", "content": "z" * 21}],
    ]
    assert "left out 1 prompt(s)" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="no prompt fits max_seq_len=20"):
        readers.fitting_prompts(str(path), CharTok(), 10, 20, "prompts")
    with pytest.raises(SystemExit, match="pass --val-prompts FILE"):
        readers.fitting_prompts(str(tmp_path / "none.jsonl"), CharTok(), 8, 30, "val-prompts")


def test_run_main_ends_bad_input_with_its_message_alone(tmp_path, capsys, monkeypatch):
    """A script's entry point: bad input (a malformed line, a missing checkpoint) exits with the
    message naming the file, no traceback; any other error is a bug and keeps its traceback."""
    monkeypatch.setattr(sys, "argv", ["sft.py"])
    bad = tmp_path / "chats.jsonl"
    good = {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]
    }
    bad.write_text(json.dumps(good) + '\n{"messages": \n')

    def reads_bad():
        read_conversations(str(bad))

    with pytest.raises(SystemExit) as stop:
        readers.run_main(reads_bad)
    assert str(stop.value).startswith(f"sft.py: {bad}:2: not valid JSON")

    def missing():
        raise FileNotFoundError("out/nope: no checkpoint")

    with pytest.raises(SystemExit, match="^sft.py: out/nope: no checkpoint$"):
        readers.run_main(missing)
    with pytest.raises(ZeroDivisionError):
        readers.run_main(lambda: 1 / 0)


def test_opt_choices_are_refused_by_name_and_inherited(capsys):
    """opt(..., choices): argparse refuses another value, naming the flag and the choices; a
    subclass that only changes the default keeps them (and the help)."""
    from dataclasses import dataclass

    @dataclass
    class Base:
        loss: str = readers.opt("a", "which loss", ("a", "b"))
        steps: int = readers.opt(3, "how many")

    @dataclass
    class Child(Base):
        loss: str = "b"

    assert readers.parse_config(Child, []).loss == "b"
    assert readers.parse_config(Child, ["--loss", "a", "--steps", "5"]).steps == 5
    with pytest.raises(SystemExit):
        readers.parse_config(Child, ["--loss", "c"])
    err = capsys.readouterr().err
    assert "--loss: invalid choice: 'c'" in err and "'a'" in err and "'b'" in err
