"""`medtune serve`: a local Gradio app for a task's fine-tuned model.

Chat for generative tasks (the same `Assistant` as `medtune chat`: scope guard, streamed answer, safety note),
highlighted entities for ner. Privacy by construction: the server binds 127.0.0.1 and is never shared, Gradio's
analytics are off, and the theme uses the system's fonts, so the page loads nothing from outside this machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from medtune.assistant import SAFETY_NOTE, Assistant
from medtune.errors import ConfigError

HOST = "127.0.0.1"
_SYSTEM_FONTS = {"font": ["ui-sans-serif", "system-ui", "sans-serif"], "font_mono": ["ui-monospace", "monospace"]}


def _gradio() -> Any:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before import: no usage reports, no version check
    try:
        import gradio
    except ImportError:
        raise ConfigError("serve", "the web app needs the [ui] extra: pip install -e '.[ui]'") from None
    return gradio


def chat_app(assistant: Assistant, title: str) -> Any:
    """A chat page: each reply streams in; refusals and safety notes never go back to the model (see
    `Assistant.remembered`)."""
    gr = _gradio()

    def respond(message: str, shown: list[dict]) -> Iterator[str]:
        history = model_history(assistant, shown)
        text = ""
        for chunk in assistant.reply(history, message):
            text += chunk
            yield text

    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.ChatInterface(
            respond,
            title=title,
            description=f"Health questions only; other questions get a fixed reply. {SAFETY_NOTE}",
            analytics_enabled=False,
        )
    return app


def ner_app(predictor: Any, title: str) -> Any:
    """A text box and the same text with its medical entities highlighted, each with its type."""
    gr = _gradio()

    def tag(text: str) -> dict:
        found = predictor.predict([text], batch_size=1)[0]["entities"]
        return {"text": text, "entities": [{"entity": e["type"], "start": e["start"], "end": e["end"]} for e in found]}

    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"# {title}\n\nMarks diseases, medications, symptoms and procedures in clinical text.")
        text = gr.Textbox(label="Clinical text", lines=4)
        button = gr.Button("Find entities", variant="primary")
        entities = gr.HighlightedText(label="Entities", show_legend=True)
        gr.Markdown(SAFETY_NOTE)
        button.click(tag, inputs=text, outputs=entities)
        text.submit(tag, inputs=text, outputs=entities)
    return app


def launch(app: Any, port: int) -> str:
    """Start serving on 127.0.0.1 only (share=False) in the background and return the local URL; the caller
    keeps the process alive (`app.block_thread()`) or stops it (`app.close()`)."""
    gr = _gradio()
    _, url, _ = app.launch(
        server_name=HOST,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=True,
        quiet=True,
        ssr_mode=False,
        theme=gr.themes.Default(**_SYSTEM_FONTS),
    )
    return url


def model_history(assistant: Assistant, shown: list[dict]) -> list[dict[str, str]]:
    """The conversation the model sees, from the messages Gradio displays (the same as `medtune chat` keeps)."""
    texts = [(m["role"], _text(m["content"])) for m in shown]
    pairs = zip(texts, texts[1:], strict=False)
    exchanges = [(q, a) for (role_q, q), (role_a, a) in pairs if (role_q, role_a) == ("user", "assistant")]
    return [turn for question, answer in exchanges for turn in assistant.remembered(question, answer)]


def _text(content: Any) -> str:
    """Gradio gives a message's content as a string or as a list of parts like {"type": "text", "text": ...}."""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))
