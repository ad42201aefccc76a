"""Stage `export@<task>` (opt-in): the merged model (or, with `export.model=aligned`, the preference-tuned one) as
GGUF files, an Ollama Modelfile and the full model card.

Not part of the default run: medtune params 'export.tasks=[terminology]' && dvc repro export@terminology
Reads params: export, and for the model card seed, model, peft, train, tasks.<task>.
    python -m stages.export terminology data/tokenized/terminology models/merged/terminology metrics/terminology \
        models/export/terminology
Each file is read back by transformers and its logits compared with the merged model's on test inputs
(medtune.modeling.MAX_RELATIVE_LOGIT_DIFF); the results go to metrics/<task>/export.json.
"""

import argparse
from pathlib import Path

from medtune.card import model_card
from medtune.config import load_params, task_config
from medtune.console import log, run_main
from medtune.export import gguf_logit_check, ollama_modelfile, quantize_with_llama_cpp, write_gguf
from medtune.io import atomic_dir, check_free_space, read_json, write_json
from medtune.modeling import check_logits, load_causal_lm, load_tokenizer, probe_sequences

# bytes per weight of each GGUF type (Q8_0: 34-byte blocks of 32; Q4_K_M: ~4.9 bits on average) for the disk check
GGUF_BYTES_PER_WEIGHT = {"f32": 4, "f16": 2, "q8_0": 34 / 32, "q4_k_m": 0.61}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task")
    parser.add_argument("tokenized_dir", type=Path)
    parser.add_argument("merged_dir", type=Path)
    parser.add_argument("metrics_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args()

    params = load_params()
    task = task_config(params, args.task)
    probe = probe_sequences(args.tokenized_dir)
    parameters = sum(f.stat().st_size for f in args.merged_dir.glob("*.safetensors")) / 4  # the merged model is fp32
    size = parameters * sum(GGUF_BYTES_PER_WEIGHT[t] for t in params.export.types)
    check_free_space(args.out_dir, size, f"The GGUF files of {args.task} ({', '.join(params.export.types)})")
    model, tokenizer = load_causal_lm(args.merged_dir), load_tokenizer(args.merged_dir)
    checks, files, name = {}, {}, f"medtune-{args.task}"
    with atomic_dir(args.out_dir) as tmp:
        for gguf_type in export_order(params.export.types):
            file = tmp / f"{args.task}-{gguf_type}.gguf"
            log.info("Writing %s", file.name)
            if gguf_type == "q4_k_m":
                quantize_with_llama_cpp(tmp / f"{args.task}-f16.gguf", file)
            else:
                write_gguf(args.merged_dir, file, gguf_type, name=name)
            checks[gguf_type] = check = gguf_logit_check(model, file, probe)
            log.info(
                "%s: %.0f MB, max |logit difference| %.3g at max |logit| %.1f (relative %.1e), same top token %.1f%%",
                file.name,
                check["size_mb"],
                check["max_abs_logit_diff"],
                check["max_abs_logit"],
                check["relative_logit_diff"],
                100 * check["top1_agreement"],
            )
            check_logits(check, gguf_type, f"{file.name} read back", "the merged model")
            files[file.name] = f"GGUF {gguf_type}, {check['size_mb']:.0f} MB (llama.cpp, Ollama)"
        ollama_file = f"{args.task}-{params.export.ollama}.gguf"
        (tmp / "Modelfile").write_text(ollama_modelfile(name, ollama_file, tokenizer, task), encoding="utf-8")
        files["Modelfile"] = (
            f"Ollama: `ollama create {name} -f Modelfile`. Served this way the model has no scope guard and no "
            "safety note after each answer: `medtune serve` adds both."
        )
        card = model_card(
            args.task,
            params,
            read_json(args.metrics_dir / "train.json"),
            read_json(args.metrics_dir / "eval.json"),
            files,
            read_json(args.tokenized_dir / "stats.json").get("data"),
            read_json(args.metrics_dir / "align.json") if params.export.model == "aligned" else None,
        )
        (tmp / "README.md").write_text(card, encoding="utf-8")
    write_json(args.metrics_dir / "export.json", checks)


def export_order(types: list[str]) -> list[str]:
    """`export.types` in the order the files are written: as given, but q4_k_m last, because llama.cpp quantizes it
    from the f16 file, which must exist by then."""
    return [t for t in types if t != "q4_k_m"] + [t for t in types if t == "q4_k_m"]


if __name__ == "__main__":
    run_main(main)
