"""A task's fine-tuned model as a conversational assistant, shared by `medtune chat` (terminal) and
`medtune serve` (medtune.webapp).

Each reply: the scope guard first (an off-topic question gets `OUT_OF_SCOPE_REPLY`, no generation), then the
conversation so far in the model's chat template with the task's system prompt, greedy generation streamed chunk
by chunk, and the safety note after any answer that does not already carry one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from threading import Thread
from typing import Any

from medtune.config import TaskConfig
from medtune.metrics import has_disclaimer
from medtune.scope import OUT_OF_SCOPE_REPLY
from medtune.tasks import user_message

SAFETY_NOTE = (
    "Note: this is general information from an AI model, not medical advice. For decisions about your health, "
    "talk to a doctor, nurse or pharmacist; in an emergency, call your local emergency number."
)


class Assistant:
    def __init__(self, model: Any, tokenizer: Any, task: TaskConfig, guard: Any | None) -> None:
        """`guard` is a `medtune.scope.ScopeGuard` (or anything with `in_scope(text) -> bool`); None: no guard."""
        self.model, self.tokenizer, self.task, self.guard = model, tokenizer, task, guard

    def reply(self, history: list[dict[str, str]], question: str) -> Iterator[str]:
        """Text chunks of the reply to `question` after the `history` of user/assistant turns."""
        if self.guard is not None and not self.guard.in_scope(question):
            yield OUT_OF_SCOPE_REPLY
            return
        answer = ""
        for chunk in self._generate(self.messages(history, question)):
            answer += chunk
            yield chunk
        if not has_disclaimer(answer):
            yield "\n\n" + SAFETY_NOTE

    def remembered(self, question: str, shown: str) -> list[dict[str, str]]:
        """The turns to keep in the history after `shown` answered `question`: the model sees its own answers
        again, never the fixed refusal or the safety note (it would learn to repeat them instead of answering)."""
        if shown == OUT_OF_SCOPE_REPLY:
            return []
        answer = shown.removesuffix("\n\n" + SAFETY_NOTE)
        return [self.user_turn(question), {"role": "assistant", "content": answer}]

    def messages(self, history: list[dict[str, str]], question: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.task.system}] if self.task.system else []
        return [*system, *history, self.user_turn(question)]

    def user_turn(self, question: str) -> dict[str, str]:
        """The question as the model was trained to see it (the task's prompt template)."""
        return {"role": "user", "content": user_message(self.task.prompt_template, question)}

    def _generate(self, messages: list[dict[str, str]]) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        inputs = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(
            **inputs,
            streamer=streamer,
            max_new_tokens=self.task.generation.max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        failures: list[Exception] = []
        thread = Thread(target=self._generate_into, args=(streamer, kwargs, failures), daemon=True)
        thread.start()
        yield from streamer
        thread.join()
        if failures:
            raise failures[0]

    def _generate_into(self, streamer: Any, kwargs: dict[str, Any], failures: list[Exception]) -> None:
        """`model.generate` on the streamer, run in a thread. A failure (out of memory, a bad input) is kept in
        `failures` for the caller to raise, and ends the stream: otherwise the caller would wait on it forever."""
        try:
            self.model.generate(**kwargs)
        except Exception as err:
            failures.append(err)
            streamer.end()


def load_assistant(task: TaskConfig, model_dir: Path, adapter_dir: Path | None, guard_file: Path | None) -> Assistant:
    """The merged model in `model_dir`, or the base in `model_dir` with the LoRA adapter in `adapter_dir`."""
    from medtune.modeling import load_adapter, load_causal_lm, load_tokenizer
    from medtune.scope import ScopeClassifier, ScopeGuard

    model = load_causal_lm(model_dir)
    if adapter_dir is not None:
        model = load_adapter(model, adapter_dir)
    guard = ScopeGuard(ScopeClassifier.load(guard_file)) if guard_file is not None else None
    return Assistant(model, load_tokenizer(model_dir), task, guard)


def chat_loop(assistant: Assistant, read: Callable[[str], str], console: Any) -> None:
    """The terminal conversation: `/reset` forgets the history, `/exit` (or end of input) ends it."""
    from rich.live import Live
    from rich.markdown import Markdown

    history: list[dict[str, str]] = []
    console.print("[bold]medtune chat[/bold]: /reset clears the conversation, /exit ends it.")
    while True:
        try:
            question = read("you> ").strip()
        except EOFError:
            break
        if question in ("/exit", "/quit"):
            break
        if question == "/reset":
            history.clear()
            console.print("[dim](conversation cleared)[/dim]")
            continue
        if not question:
            continue
        text = ""
        with Live(Markdown(""), console=console, refresh_per_second=8) as live:
            for chunk in assistant.reply(history, question):
                text += chunk
                # hard line breaks: Markdown would join the lines of an answer (the four terminology sections)
                live.update(Markdown(text.replace("\n", "  \n")))
        console.print()
        history += assistant.remembered(question, text)
