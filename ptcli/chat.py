"""`train --chat`: the template inside an instruct backbone's chat template.

The template's part before the label slot becomes the user's message and the slot opens the assistant's answer;
whatever follows the slot in the template stays after it. The chat template is rendered once by the tokenizer
(`apply_chat_template`, with the generation prompt) around a placeholder message and cut there, so its two literal
halves wrap the template's own segments and every [P] keeps its place:

    <|im_start|>user\\n  [P][P]Review: <text>\\nSentiment:  <|im_end|>\\n<|im_start|>assistant\\n  [MASK]

The half before the message (`head`: system prompt, user-turn opener) is the same for every row; the classifier
puts it in its shared context (template.Context) with any demonstrations after it, so demonstrations sit inside the
user turn. Trailing whitespace of the message is dropped, and the label words are tokenized as the slot now stands
(after the assistant opener, without the leading space a "Sentiment: [MASK]" template gives them).
"""

from __future__ import annotations

from ptcli.backbone import Backbone
from ptcli.errors import PtcliError, UsageError
from ptcli.template import Segment, Template, render

PLACEHOLDER = "PTCLI-USER-MESSAGE-7F3A"


def wrap(template: Template, backbone: Backbone) -> tuple[list[int], Template]:
    """(the token ids of the chat text before the user's message, the template as the user's turn and the
    assistant's answer)."""
    name = backbone.info.name
    if backbone.kind != "causal":
        raise UsageError(f"--chat: {name} is a masked LM; chat templates are for causal instruct models, drop --chat")
    tok = backbone.tokenizer
    if not getattr(tok, "chat_template", None):
        raise UsageError(f"--chat: the {name} tokenizer has no chat template; drop --chat or use an instruct model")
    try:
        rendered = tok.apply_chat_template([{"role": "user", "content": PLACEHOLDER}], tokenize=False,
                                           add_generation_prompt=True)
    except Exception as e:  # a broken Jinja template: a user-level problem with the model, not a ptcli bug
        raise PtcliError(f"--chat: the {name} chat template does not render ({str(e).splitlines()[0][:120]}); "
                         "drop --chat") from None
    if not isinstance(rendered, str) or rendered.count(PLACEHOLDER) != 1:
        raise PtcliError(f"--chat: the {name} chat template does not show the user's message once; drop --chat")
    head, tail = rendered.split(PLACEHOLDER)
    head_ids = list(tok(head, add_special_tokens=False)["input_ids"]) if head else []
    lead = backbone.prefix_special
    if lead and head_ids[: len(lead)] == lead:
        head_ids = head_ids[len(lead):]  # the chat's BOS: the backbone puts its own first
    slot = template.slot_index()
    message = list(template.segments[:slot])
    if message and message[-1].kind == "literal":
        text = message.pop().text.rstrip()
        message += [Segment("literal", text)] if text else []
    segments = (*message, *([Segment("literal", tail)] if tail else []), *template.segments[slot:])
    return head_ids, Template(source=render(segments), segments=segments, path=template.path)
