import io
import json
import re
from typing import Any

import lmstudio as lms
import pytest
from outlines.inputs import Audio, Chat, Image, Video
from PIL import Image as PILImage

from outlines_lmstudio import LMStudioTypeAdapter
from outlines_lmstudio._images import ImageData, PendingImage
from outlines_lmstudio._inputs import ChatPrompt, build_chat, format_input, sdk_history
from outlines_lmstudio.errors import InvalidPromptError, UnsupportedInputError


def png(color: str = "red") -> Image:
    buffer = io.BytesIO()
    PILImage.new("RGB", (2, 2), color).save(buffer, format="PNG")
    return Image(PILImage.open(io.BytesIO(buffer.getvalue())))


def fake_handles(prompt: ChatPrompt) -> dict[str, lms.FileHandle]:
    return {
        image.digest: lms.FileHandle(
            name=image.name,
            identifier=f"id-{image.digest[:6]}",
            size_bytes=len(image.data),
            file_type="image",
        )
        for image in prompt.images
    }


def wire(prompt: ChatPrompt) -> list[dict[str, Any]]:
    chat = build_chat(prompt, fake_handles(prompt))
    history: dict[str, Any] = dict(chat._get_history())  # the wire form the SDK sends
    return list(history["messages"])


def test_adapter_dispatches_and_is_pure() -> None:
    prompt = LMStudioTypeAdapter().format_input("Hello")
    assert wire(prompt) == [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]


def test_list_with_images_dedupes_uploads_but_keeps_each_reference() -> None:
    red, red_again, blue = png("red"), png("red"), png("blue")
    prompt = format_input(["Compare", red, red_again, blue])
    assert len(prompt.images) == 2
    parts = wire(prompt)[0]["content"]
    assert [p["type"] for p in parts] == ["text", "file", "file", "file"]
    assert parts[1]["identifier"] == parts[2]["identifier"] != parts[3]["identifier"]


def test_chat_with_system_anywhere_tools_and_images() -> None:
    chat = Chat(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": ["What is this?", png()]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "look", "arguments": '{"x": 1}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "a red square"},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Alors?"},
        ]
    )
    messages = wire(format_input(chat))
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "system",
        "user",
    ]
    assert messages[1]["content"][1]["type"] == "file"
    request = messages[2]["content"][1]["toolCallRequest"]
    assert request == {"type": "function", "id": "c1", "name": "look", "arguments": {"x": 1}}
    assert messages[3]["content"][0] == {
        "type": "toolCallResult",
        "toolCallId": "c1",
        "content": "a red square",
    }
    assert messages[4]["content"][0]["text"] == "Answer in French."


def test_consecutive_system_and_assistant_messages_are_joined_not_dropped() -> None:
    chat = Chat(
        [
            {"role": "system", "content": "A."},
            {"role": "system", "content": "B."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "user", "content": "and?"},
        ]
    )
    messages = wire(format_input(chat))
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"][0]["text"] == "A.\n\nB."
    assert messages[2]["content"][0]["text"] == "one\n\ntwo"


def test_typed_dict_items_are_accepted() -> None:
    prompt = format_input(
        Chat(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Look"},
                        {"type": "image", "image": png()},
                    ],
                }
            ]
        )
    )
    assert len(prompt.images) == 1


def test_lmstudio_chat_passes_through_unchanged() -> None:
    """Sent as the caller built it: a copy of it as it is at the call (see below)."""
    chat = lms.Chat("sys")
    chat.add_user_message("hi")
    prompt = format_input(chat)
    sent = build_chat(prompt, {})
    assert sent is not chat
    assert str(sent) == str(chat)


def test_file_handles_pass_through() -> None:
    handle = lms.FileHandle(name="a.png", identifier="up-1", size_bytes=3, file_type="image")
    prompt = format_input(["see", handle])
    assert prompt.images == []
    assert wire(prompt)[0]["content"][1]["identifier"] == "up-1"


@pytest.mark.parametrize(
    ("model_input", "error", "match"),
    [
        (3, UnsupportedInputError, "int is not supported"),
        (None, UnsupportedInputError, "NoneType"),
        (b"bytes", UnsupportedInputError, "bytes"),
        ("", InvalidPromptError, r"The prompt is empty\. Pass"),
        ("  \n", InvalidPromptError, r"empty \(only whitespace\)"),  # found by a probe
        ([], InvalidPromptError, "empty"),
        (["text", png(), 5], UnsupportedInputError, "item 2"),
        ([png(), "text"], UnsupportedInputError, "prompt .a str., not an Image"),
        (["see", Video(video=b"x")], UnsupportedInputError, "only images"),
        (  # was sent as an image, to a text-only model too (found by a probe)
            [
                "see",
                lms.FileHandle(name="a.txt", identifier="u", size_bytes=1, file_type="text/plain"),
            ],
            UnsupportedInputError,
            r"item 1 is an lmstudio FileHandle of a 'text/plain' file \('a.txt'\), not of an image",
        ),
        (["hear", Audio(audio=b"x")], UnsupportedInputError, "holds an Audio; "),  # "a Audio"
        (Audio(audio=b"x"), UnsupportedInputError, "Audio"),
        (Chat([]), InvalidPromptError, "no messages"),
        (Chat([{"role": "system", "content": "x"}]), InvalidPromptError, "no user message"),
        (Chat([{"role": "wizard", "content": "x"}]), UnsupportedInputError, "role 'wizard'"),
        (Chat([{"content": "x"}]), UnsupportedInputError, "role None"),
        (Chat([{"role": "user", "content": 5}]), UnsupportedInputError, "user content"),
        (Chat([{"role": "user", "content": ""}]), InvalidPromptError, "empty"),
        (  # an empty extra key takes the slower path (found by mutation testing)
            Chat([{"role": "user", "content": "  ", "name": None}]),
            InvalidPromptError,
            "Chat message 0: the user message is empty",
        ),
        (
            Chat([{"role": "user", "content": "x"}, {"role": "system", "content": ["s", png()]}]),
            UnsupportedInputError,
            "text only",
        ),
        (
            Chat([{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}]),
            UnsupportedInputError,
            "tool_call_id",
        ),
        (
            Chat(
                [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "tool_calls": [{"id": "1"}]},
                ]
            ),
            UnsupportedInputError,
            "tool call",
        ),
        (
            Chat([{"role": "user", "content": [{"type": "video"}]}]),
            UnsupportedInputError,
            "expected",
        ),
    ],
)
def test_bad_inputs_raise_before_anything_is_sent(
    model_input: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        format_input(model_input)


def test_image_data_is_hashable_and_stable() -> None:
    first = format_input(["a", png()]).images[0]
    second = format_input(["b", png()]).images[0]
    assert isinstance(first, ImageData)
    assert first == second


# -- issue 13 / 14: plain strings, no text after the prompt, the SDK's own history ------


def public_chat(prompt: ChatPrompt, handles: dict[str, lms.FileHandle]) -> lms.Chat:
    """The same chat built with the SDK's public add_* methods (the slow, reference path)."""
    from outlines_lmstudio._inputs import _merged

    chat = lms.Chat()
    for message in _merged(prompt.messages):
        if message.role == "system":
            chat.add_system_prompt(message.text)
        elif message.role == "user":
            chat.add_user_message(
                [
                    handles[p.digest] if isinstance(p, ImageData) else p
                    for p in message.parts
                    if not isinstance(p, PendingImage)  # format_input leaves none here
                ]
            )
        elif message.role == "assistant":
            chat.add_assistant_response(
                message.text,
                [
                    lms.ToolCallRequest(
                        type="function", id=c.id or None, name=c.name, arguments=c.arguments
                    )
                    for c in message.tool_calls
                ],
            )
        else:
            chat.add_tool_result(
                lms.ToolCallResultData(content=message.text, tool_call_id=message.tool_call_id)
            )
    return chat


def test_history_is_what_the_sdk_builds_itself() -> None:
    chat = Chat(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Use French."},
            {"role": "user", "content": ["What is this?", png()]},
            {"role": "user", "content": "And this?"},
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {"id": "c1", "function": {"name": "look", "arguments": '{"at": "it"}'}},
                    {"function": {"name": "zoom", "arguments": {"x": 2}}},
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": {"seen": ["a cat"]}},
            {"role": "tool", "tool_call_id": "c2", "content": "zoomed"},
            {"role": "assistant", "content": "A cat."},
            {"role": "assistant", "content": "Certainly."},
            {"role": "user", "content": [{"type": "text", "text": "Thanks"}, png("blue")]},
        ]
    )
    prompt = format_input(chat)
    handles = fake_handles(prompt)
    ours = build_chat(prompt, handles)._get_history()
    assert ours == public_chat(prompt, handles)._get_history()
    assert [m["role"] for m in ours["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "tool",
        "assistant",
        "user",
    ]


def _tool_result(content: object) -> str:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    chat = Chat(
        [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": content},
        ]
    )
    return str(wire(format_input(chat))[-1]["content"][0]["content"])


def test_a_tool_result_given_as_openai_text_parts_is_sent_as_their_text() -> None:
    parts = [{"type": "text", "text": "22 C, "}, {"type": "text", "text": "sunny"}]
    assert _tool_result(parts) == "22 C, sunny"
    # JSON data that merely looks typed is still the result's JSON
    assert _tool_result([{"type": "cat", "name": "Tom"}]) == '[{"type": "cat", "name": "Tom"}]'
    assert _tool_result({"type": "text", "text": "x"}) == '{"type": "text", "text": "x"}'


@pytest.mark.parametrize(
    "data",
    [
        [{"type": "file", "name": "a.txt", "size": 3}],
        [{"type": "image", "url": "http://x/y.png"}],
        [{"type": "text", "text": "hi", "score": 0.9}],
        {"type": "image", "url": "http://x/y.png"},
    ],
)
def test_a_tool_result_that_is_json_data_with_a_type_field_stays_json(data: object) -> None:
    """Only exact text parts are parts: JSON data that merely has a "type" was refused, or
    checked as a user prompt (found by a review). An OpenAI image part (``image_url`` with
    its ``image_url``), alone or in a list, is refused: its base64 went to the model as text
    (found by a later probe; see `test_messages_that_cannot_be_sent_say_what_is_wrong`)."""
    assert json.loads(_tool_result(data)) == data


def test_a_lone_empty_system_message_is_sent_as_given() -> None:
    """Decided after a probe (Outlines' own model drops it): a chat template that writes a
    default system prompt when there is none (Qwen 2.5's) writes none for an empty one."""
    chat = Chat([{"role": "system", "content": ""}, {"role": "user", "content": "Hi"}])
    assert [(m.role, m.text) for m in format_input(chat).messages] == [
        ("system", ""),
        ("user", "Hi"),
    ]


def test_an_empty_text_part_is_an_empty_tool_result() -> None:
    assert _tool_result([{"type": "text", "text": ""}]) == ""


def test_str_subclasses_in_an_lmstudio_chat_are_sent_as_plain_text() -> None:
    """The SDK's encoder failed on them with a raw TypeError (found by a probe)."""
    from markupsafe import Markup

    chat = lms.Chat(Markup("Be <b>brief</b>."))
    chat.add_user_message(Markup("Hi"))
    chat.add_assistant_response(Markup("Hello"))
    chat.add_user_message("And?")
    prompt = format_input(chat)
    sent: list[Any] = list(build_chat(prompt, {})._get_history()["messages"])  # TypeError before
    texts = [part["text"] for message in sent for part in message["content"]]
    assert texts == ["Be <b>brief</b>.", "Hi", "Hello", "And?"]
    assert all(type(text) is str for text in texts)
    kept: Any = chat._messages[1].content[0]
    assert type(kept.text) is Markup  # the caller's chat is left as it is


def test_str_subclasses_in_an_lmstudio_chat_s_tool_fields_are_sent_as_plain_text() -> None:
    """Found by a probe: a tool result's call id, a tool call's name, id or an argument as
    a ``Markup`` failed in the SDK's encoder (only texts were made plain)."""
    from markupsafe import Markup

    history: Any = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "add"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": ""},
                    {
                        "type": "toolCallRequest",
                        "toolCallRequest": {
                            "type": "function",
                            "name": Markup("add"),
                            "id": Markup("c1"),
                            "arguments": {"a": Markup("x"), "b": [Markup("y")]},
                        },
                    },
                ],
            },
            {
                "role": "tool",
                "content": [{"type": "toolCallResult", "content": "2", "toolCallId": Markup("c1")}],
            },
        ]
    }
    chat = lms.Chat.from_history(history)
    sent: Any = build_chat(format_input(chat), {})._get_history()  # TypeError before
    request = sent["messages"][1]["content"][1]["toolCallRequest"]
    assert request == {
        "type": "function",
        "name": "add",
        "id": "c1",
        "arguments": {"a": "x", "b": ["y"]},
    }
    assert sent["messages"][2]["content"][0]["toolCallId"] == "c1"
    strings = [
        request["name"],
        request["id"],
        request["arguments"]["a"],
        request["arguments"]["b"][0],
    ]
    assert all(type(text) is str for text in strings)


def test_each_call_gets_its_own_chat() -> None:
    prompt = format_input("Hello")
    first, second = build_chat(prompt, {}), build_chat(prompt, {})
    first.add_assistant_response("Hi")
    assert len(second._get_history()["messages"]) == 1


def test_str_subclasses_become_plain_str_everywhere() -> None:
    from markupsafe import Markup

    prompts = [
        format_input(Markup("Hi")),
        format_input([Markup("Hi"), png()]),
        format_input(
            Chat(
                [
                    {"role": "system", "content": Markup("S")},
                    {"role": "user", "content": Markup("U")},
                    {
                        "role": "assistant",
                        "content": Markup("A"),
                        "tool_calls": [
                            {
                                "id": Markup("c"),
                                "function": {"name": Markup("f"), "arguments": {"q": Markup("v")}},
                            }
                        ],
                    },
                    {"role": "tool", "tool_call_id": Markup("c"), "content": Markup("R")},
                ]
            )
        ),
    ]
    for prompt in prompts:
        for message in prompt.messages:
            assert all(type(p) is str for p in message.parts if isinstance(p, str))
            for call in message.tool_calls:
                assert (type(call.id), type(call.name)) == (str, str)
                assert type(call.arguments["q"]) is str
            assert message.tool_call_id is None or type(message.tool_call_id) is str


@pytest.mark.parametrize(
    "model_input",
    [
        ["Describe", "photo.jpg"],
        ["Describe", png(), "photo.jpg"],
        Chat([{"role": "user", "content": ["Describe", "photo.jpg"]}]),
    ],
)
def test_text_after_the_prompt_is_refused_pointing_to_image(model_input: object) -> None:
    with pytest.raises(UnsupportedInputError, match=r"photo\.jpg.*outlines\.inputs\.Image"):
        format_input(model_input)


def test_typed_text_items_stay_several_parts() -> None:
    prompt = format_input(
        [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}, png()]
    )
    assert prompt.messages[0].parts[:2] == ("One.", "Two.")


@pytest.mark.parametrize(
    "item",
    [
        {"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}},
        {"type": "image", "image": png(), "detail": "high"},
    ],
)
def test_typed_item_keys_that_would_be_dropped_are_refused(item: dict[str, Any]) -> None:
    """As for message keys: ``detail`` or ``cache_control`` were dropped without a word."""
    with pytest.raises(
        UnsupportedInputError, match=r"item 1, has key\(s\) \['(cache_control|detail)'\]"
    ):
        format_input(["Describe", item])
    format_input(["Describe", {"type": "text", "text": "Hi", "detail": None}])  # drops nothing


def test_empty_lmstudio_chat_is_refused() -> None:
    with pytest.raises(InvalidPromptError, match=r"lmstudio\.Chat has no messages"):
        format_input(lms.Chat())
    assert format_input(lms.Chat.from_history("Hi")).passthrough is not None


def _wire(prompt: ChatPrompt) -> Any:
    return build_chat(prompt, {})._get_history()["messages"]


def test_a_chat_sent_again_unchanged_reuses_its_conversion() -> None:
    chat = Chat([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}])
    first = format_input(chat)
    assert format_input(chat) is first  # no change: the checked conversion is reused


@pytest.mark.parametrize(
    "change",
    [
        lambda chat: chat.add_assistant_message("A"),  # grown
        lambda chat: chat.messages.pop(),  # shrunk
        lambda chat: chat.messages[1].update(content="Changed"),  # edited in place
        lambda chat: chat.messages[1].update(role="system"),  # role changed
        lambda chat: chat.messages.__setitem__(1, {"role": "user", "content": "Other"}),
        lambda chat: chat.messages[0].update(tool_calls=[]),  # a key added
    ],
)
def test_any_change_to_a_chat_is_converted_afresh(change: Any) -> None:
    chat = Chat([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}])
    first = format_input(chat)
    change(chat)
    if not any(m.get("role") == "user" for m in chat.messages):
        with pytest.raises(InvalidPromptError):
            format_input(chat)
        return
    again = format_input(chat)
    assert again is not first
    assert again == format_input(Chat([dict(m) for m in chat.messages]))  # a fresh Chat


def test_a_chat_with_list_content_is_never_reused() -> None:
    parts: list[Any] = ["Look", png()]
    chat = Chat([{"role": "user", "content": parts}])
    first = format_input(chat)
    parts.append(png())  # changed in place: the same list object
    assert format_input(chat) is not first
    assert len(format_input(chat).messages[0].parts) == 3


def test_chats_built_from_one_prompt_stay_apart() -> None:
    chat = Chat([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}])
    prompt = format_input(chat)
    first, second = build_chat(prompt, {}), build_chat(prompt, {})
    first.add_user_message("more")  # the SDK extends the last user message in place
    first.add_assistant_response("A")
    assert _wire(prompt) == _wire(format_input(Chat([dict(m) for m in chat.messages])))
    assert second._get_history()["messages"] == _wire(prompt)
    assert len(second._get_history()["messages"]) == 2


def test_a_dead_chat_leaves_no_cache_entry() -> None:
    import gc

    from outlines_lmstudio import _inputs

    chat = Chat([{"role": "user", "content": "Hi"}])
    format_input(chat)
    key = id(chat)
    assert key in _inputs._CONVERTED
    del chat
    gc.collect()
    assert key not in _inputs._CONVERTED


def test_a_growing_chat_converts_only_what_is_new() -> None:
    chat = Chat([{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}])
    first = format_input(chat)
    chat.add_assistant_message("Hello")
    chat.add_user_message("More")
    second = format_input(chat)
    assert second.messages[:2] == first.messages[:2]
    assert all(a is b for a, b in zip(second.messages[:2], first.messages, strict=True))
    assert second == format_input(Chat([dict(m) for m in chat.messages]))


def test_an_edit_in_the_middle_converts_from_there_on() -> None:
    chat = Chat([{"role": "user", "content": f"m{k}"} for k in range(4)])
    first = format_input(chat)
    chat.messages[2]["content"] = "edited"
    second = format_input(chat)
    assert [a is b for a, b in zip(second.messages, first.messages, strict=True)] == [
        True,
        True,
        False,
        False,
    ]
    assert second.messages[2].parts == ("edited",)


def test_list_content_ends_the_reusable_part() -> None:
    parts: list[Any] = ["Look", png()]
    chat = Chat([{"role": "user", "content": "Hi"}, {"role": "user", "content": parts}])
    first = format_input(chat)
    parts.append(png())  # changed in place
    second = format_input(chat)
    assert second.messages[0] is first.messages[0]
    assert len(second.messages[1].parts) == 3


def test_a_one_message_text_prompt_goes_to_the_sdk_as_its_text() -> None:
    """The SDK builds the same chat from the str (what a user by hand passes too)."""
    prompt = format_input("Hello  there\n")
    assert sdk_history(prompt, {}) == "Hello  there\n"
    sent = lms.Chat.from_history("Hello  there\n")._get_history()
    assert sent == build_chat(prompt, {})._get_history()
    for other in (
        format_input(Chat([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])),
        format_input(["Look", png()]),
        format_input(
            Chat([{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}])
        ),
        format_input(lms.Chat.from_history("Hello")),
    ):
        assert isinstance(sdk_history(other, fake_handles(other)), lms.Chat)


@pytest.mark.parametrize(
    ("message", "keys"),
    [
        ({"role": "user", "content": "Hi", "name": "bob"}, r"\['name'\].*'role', 'content'"),
        ({"role": "system", "content": "S", "tool_call_id": "1"}, r"\['tool_call_id'\]"),
        ({"role": "assistant", "content": "A", "weight": 0}, r"\['weight'\]"),
        ({"role": "user", "content": ["Hi"], "cache": True}, r"\['cache'\]"),
    ],
)
def test_message_keys_lm_studio_would_drop_are_refused(message: dict[str, Any], keys: str) -> None:
    """Nothing is dropped silently: a key the role's message does not send is refused."""
    with pytest.raises(UnsupportedInputError, match=f"Chat message 1 .*{keys}"):
        format_input(Chat([{"role": "system", "content": "S"}, message]))


def test_empty_extra_message_keys_carry_nothing_and_pass() -> None:
    """OpenAI-style histories write ``"tool_calls": None`` or ``"name": ""`` on every message."""
    chat = Chat([{"role": "user", "content": "Hi", "tool_calls": None, "name": "", "x": []}])
    assert format_input(chat) == format_input(Chat([{"role": "user", "content": "Hi"}]))


def test_an_lmstudio_chat_without_a_user_message_is_refused() -> None:
    answered = lms.Chat("be terse")
    answered.add_assistant_response("I spoke first")
    for chat in (lms.Chat("be terse"), answered):
        with pytest.raises(InvalidPromptError, match="no user message"):
            format_input(chat)
    answered.add_user_message("now a question")
    assert str(format_input(answered).passthrough) == str(answered)


def _image_handle() -> lms.FileHandle:
    return lms.FileHandle(name="cat.png", identifier="file-1", size_bytes=10, file_type="image")


def test_an_lmstudio_chat_is_taken_as_it_is_at_the_call() -> None:
    """Found by a probe: ``model.stream(chat)`` sent what was added to the chat after the
    call (the chat was read at the first ``next()``), past the checks made at the call."""
    chat = lms.Chat("Be brief.")
    chat.add_user_message("first")
    prompt = format_input(chat)
    chat.add_assistant_response("late")
    chat.add_user_message("LATE", images=[_image_handle()])
    sent = sdk_history(prompt, {})
    assert isinstance(sent, lms.Chat)
    assert sent is not chat
    assert "LATE" not in str(sent)
    assert prompt.image_count == 0


def test_an_image_in_an_assistant_message_of_an_lmstudio_chat_counts() -> None:
    """Found by a probe: only user messages' images were counted, so a model without vision
    failed the request on the server instead of a refusal before it."""
    chat = lms.Chat()
    chat.add_user_message("Draw a cat")
    chat.add_assistant_response(_image_handle())
    chat.add_user_message("Describe it")
    assert format_input(chat).image_count == 1


@pytest.mark.parametrize(
    ("message", "said"),
    [
        (  # it said "must start with the text prompt ... Pass [prompt, Image, ...]"
            {"role": "assistant", "content": [png()]},
            "assistant messages take text only; put images in a user message",
        ),
        (
            {"role": "tool", "tool_call_id": 1, "content": "x"},
            "'tool_call_id' of the call they answer (a non-empty str; got 1)",
        ),
        (  # it said "Object of type Image is not JSON serializable"
            {"role": "tool", "tool_call_id": "c1", "content": [png()]},
            "a tool result takes text or JSON data, not images",
        ),
        (  # an image part was sent as its JSON text, base64 and all
            {
                "role": "tool",
                "tool_call_id": "c1",
                "content": [
                    {"type": "text", "text": "shot"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                ],
            },
            "a tool result takes text or JSON data, not images",
        ),
        (  # alone, it went as JSON text (found by a review)
            {
                "role": "tool",
                "tool_call_id": "c1",
                "content": {"type": "image_url", "image_url": {"url": "data:image/png;base64,"}},
            },
            "a tool result takes text or JSON data, not images",
        ),
    ],
    ids=["assistant image", "int call id", "tool image", "tool image part", "lone image part"],
)
def test_messages_that_cannot_be_sent_say_what_is_wrong(message: dict[str, Any], said: str) -> None:
    """Found by a probe: refusals that pointed the wrong way."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        message,
        {"role": "user", "content": "then?"},
    ]
    with pytest.raises(UnsupportedInputError, match=re.escape(said)):
        format_input(Chat(history))


class _SessionChat(lms.Chat):
    def __init__(self, session: str) -> None:
        super().__init__("Be brief.")
        self.session = session


def test_an_lmstudio_chat_subclass_with_its_own_arguments_is_taken() -> None:
    """Found by a review: the copy at the call made with ``copy()`` called the subclass's
    own ``__init__`` without its arguments (a raw ``TypeError``)."""
    chat = _SessionChat("s1")
    chat.add_user_message("hello")
    sent = sdk_history(format_input(chat), {})
    assert isinstance(sent, lms.Chat)
    assert "hello" in str(sent)


def test_json_data_in_a_tool_result_is_not_taken_for_an_image() -> None:
    """Found by a review: ``{"type": "image", "url": ...}`` (a search tool's result) was
    refused as an image."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    found = {"type": "image", "url": "https://example.com/cat.jpg", "caption": "a cat"}
    history: list[dict[str, Any]] = [
        {"role": "user", "content": "find a cat"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": found},
        {"role": "tool", "tool_call_id": "c1", "content": [found]},
    ]
    prompt = format_input(Chat(history))
    assert [m.parts for m in prompt.messages[2:]] == [(json.dumps(found),), (json.dumps([found]),)]


def test_text_after_a_tool_call_with_no_result_between_is_refused() -> None:
    """Found by a probe: the two assistant messages were joined with the text first, the
    reverse of what happened (the SDK holds no text after a call in one reply)."""
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    chat = Chat(
        [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "assistant", "content": "Done."},
            {"role": "user", "content": "ok"},
        ]
    )
    with pytest.raises(UnsupportedInputError, match=r"^Chat message 2: .* no tool result between"):
        format_input(chat)  # before anything is sent, images uploaded included
    before = Chat(  # text, then its calls: one reply, in that order
        [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "Let me look."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "2"},
        ]
    )
    assert [m["role"] for m in wire(format_input(before))] == ["user", "assistant", "tool"]


def test_a_key_a_message_does_not_take_is_named_in_good_english() -> None:
    """Found by a probe: "an user message takes 'role', 'content'"."""
    chat = Chat([{"role": "user", "content": "U", "name": "bob"}])
    with pytest.raises(UnsupportedInputError, match="Remove them: a user message takes"):
        format_input(chat)
