"""A task's own splits, as corpora ship them: a corpus's train/devel/test files or a hub dataset's splits are kept as
given, the splits a task does not name are carved from train, texts shared by named splits are counted (or refused),
and a hub dataset is read at a commit that prepare records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import STAGE_ENV, make_project, qa, run_stage, write_lines
from medtune.config import compose_params
from medtune.errors import ConfigError

CORPUS = ["tasks.qa.data.path=data/corpus"]


def prepared(project: Path, task: str = "qa") -> tuple[dict, dict[str, list[dict]]]:
    out = project / "data" / "prepared" / task
    splits = {
        s: [json.loads(line) for line in (out / f"{s}.jsonl").read_text().splitlines()]
        for s in ("train", "validation", "test")
    }
    return json.loads((out / "stats.json").read_text()), splits


def mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def questions(records: list[dict]) -> list[str]:
    return [r["prompt"] for r in records]


def test_a_corpus_with_its_own_train_devel_and_test_files_keeps_them_as_given(tmp_path):
    project = make_project(
        tmp_path,
        [qa(0)],
        [*CORPUS, "++tasks.qa.data.splits={train:train.jsonl,validation:devel.jsonl,test:test.jsonl}"],
    )
    corpus = mkdir(project / "data" / "corpus")
    write_lines(corpus / "train.jsonl", [qa(i) for i in range(30)])
    write_lines(corpus / "devel.jsonl", [qa(i) for i in range(30, 35)])
    write_lines(corpus / "test.jsonl", [qa(i) for i in (44, 40, 36, 35)])  # in the corpus's own order

    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 0, result.stderr
    stats, splits = prepared(project)
    assert questions(splits["test"]) == [f"Question number {i}?" for i in (44, 40, 36, 35)]
    assert questions(splits["validation"]) == [f"Question number {i}?" for i in range(30, 35)]
    assert len(splits["train"]) == 30
    assert stats["splits"] == {
        "train": "given: train.jsonl",
        "validation": "given: devel.jsonl",
        "test": "given: test.jsonl",
    }
    assert stats["leakage"] == {} and (stats["train"], stats["validation"], stats["test"]) == (30, 5, 4)


def test_the_splits_a_task_does_not_name_are_carved_from_train_and_a_named_test_is_never_altered(tmp_path):
    project = make_project(
        tmp_path, [qa(0)], [*CORPUS, "++tasks.qa.data.splits={train:[a.jsonl,b.jsonl],test:test.jsonl}"]
    )
    corpus = mkdir(project / "data" / "corpus")
    write_lines(corpus / "a.jsonl", [qa(i) for i in range(20)])
    write_lines(corpus / "b.jsonl", [qa(i) for i in range(20, 40)])
    # test holds a question that is also in train: a named split is kept exactly as given, and the overlap counted
    write_lines(corpus / "test.jsonl", [qa(3), qa(50), qa(51), qa(52)])

    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 0, result.stderr
    stats, splits = prepared(project)
    assert questions(splits["test"]) == [f"Question number {i}?" for i in (3, 50, 51, 52)]
    assert stats["splits"]["validation"] == "carved from train by seed (10%)"
    assert stats["splits"]["train"] == "given: a.jsonl, b.jsonl"
    assert (stats["validation"], stats["train"]) == (4, 36)  # 10% of the 40 train records
    assert not set(questions(splits["validation"])) & set(questions(splits["train"]))  # carved splits never leak
    assert stats["leakage"] == {"train~test": 1} or stats["leakage"] == {"validation~test": 1}
    assert "The named splits share texts: 1" in result.stderr


def test_on_leakage_error_refuses_named_splits_that_share_a_text_and_writes_nothing(tmp_path):
    overrides = [
        *CORPUS,
        "++tasks.qa.data.splits={train:train.jsonl,test:test.jsonl}",
        "tasks.qa.data.on_leakage=error",
    ]
    project = make_project(tmp_path, [qa(0)], overrides)
    mkdir(project / "data/corpus")
    write_lines(project / "data/corpus/train.jsonl", [qa(i) for i in range(20)])
    write_lines(project / "data/corpus/test.jsonl", [qa(5), qa(30)])
    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: data/corpus: the named splits share texts: 1 (" in result.stderr
    assert "tasks.qa.data.on_leakage=warn" in result.stderr
    assert not (project / "data/prepared/qa").exists()


def test_split_max_records_takes_a_seeded_sample_of_one_split(tmp_path):
    overrides = [*CORPUS, "++tasks.qa.data.splits={train:train.jsonl,validation:devel.jsonl,test:test.jsonl}"]
    project = make_project(tmp_path, [qa(0)], [*overrides, "++tasks.qa.data.split_max_records={validation:3}"])
    mkdir(project / "data/corpus")
    write_lines(project / "data/corpus/train.jsonl", [qa(i) for i in range(20)])
    write_lines(project / "data/corpus/devel.jsonl", [qa(i) for i in range(20, 30)])
    write_lines(project / "data/corpus/test.jsonl", [qa(i) for i in range(30, 35)])
    assert run_stage(project, "stages.prepare", "qa", "data/prepared/qa").returncode == 0
    stats, splits = prepared(project)
    kept = questions(splits["validation"])
    assert len(kept) == 3 and set(kept) < {f"Question number {i}?" for i in range(20, 30)}
    assert stats["sampled_out"] == 7 and len(splits["test"]) == 5
    (project / "data/prepared/qa").rename(project / "first")
    assert run_stage(project, "stages.prepare", "qa", "data/prepared/qa").returncode == 0
    assert questions(prepared(project)[1]["validation"]) == kept  # by seed: the same sample again


def test_a_corpus_folder_that_is_a_file_is_a_clear_error(tmp_path):
    project = make_project(tmp_path, [qa(i) for i in range(30)], ["++tasks.qa.data.splits={train:qa.jsonl}"])
    result = run_stage(project, "stages.prepare", "qa", "data/prepared/qa")
    assert result.returncode == 1
    assert "error: data/raw/qa.jsonl: is not a folder, but tasks.qa.data.splits names files inside it" in result.stderr


@pytest.mark.parametrize("path", ["/srv/corpora/qa.jsonl", "../corpora/qa.jsonl", "data/../../qa.jsonl"])
def test_a_data_path_outside_the_project_is_refused_with_the_ways_to_bring_it_in(conf_project, path):
    with pytest.raises(
        ConfigError, match=r"`tasks\.qa\.data\.path`: .* is outside the project.*dvc add.*dvc import-url"
    ):
        compose_params(conf_project, [f"tasks.qa.data.path={path}"])


@pytest.mark.parametrize(
    ("override", "key", "problem"),
    [
        ("++tasks.qa.data.splits={test:test.jsonl}", "tasks.qa.data.splits", "must name train"),
        ("++tasks.qa.data.splits={train:a.jsonl,dev:b.jsonl}", "tasks.qa.data.splits", "unknown split 'dev'"),
        ("++tasks.qa.data.splits={train:../a.jsonl}", "tasks.qa.data.splits.train", "must be a file inside"),
        ("++tasks.qa.data.split_max_records={devel:5}", "tasks.qa.data.split_max_records", "unknown split 'devel'"),
        ("++tasks.qa.data.split_max_records={validation:0}", "tasks.qa.data.split_max_records.validation", "1 or more"),
        ("tasks.qa.data.on_leakage=drop", "tasks.qa.data.on_leakage", "must be 'warn' or 'error'"),
        ("tasks.qa.data.path=null", "tasks.qa.data.path", "is empty"),
    ],
)
def test_bad_split_settings_are_refused_when_params_are_read(conf_project, override, key, problem):
    with pytest.raises(ConfigError, match=rf"`{key}`: .*{problem}"):
        compose_params(conf_project, [override])


def test_a_named_test_split_needs_no_test_share(conf_project):
    """The shares are for carved splits only: with test named, a test share of 0 is not an error."""
    compose_params(
        conf_project, [*CORPUS, "++tasks.qa.data.splits={train:a.jsonl,test:b.jsonl}", "tasks.qa.split.test=0"]
    )


def hub_folder(folder: Path, splits: dict[str, list[tuple[list[str], list[int]]]]) -> Path:
    """A dataset folder in the hub's layout (data/<split>-00000-of-00001.parquet), with integer `ner_tags` whose names
    are a ClassLabel feature, as NCBI-disease and BC5CDR are published."""
    import datasets

    names = ["O", "B-Disease", "I-Disease"]
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    (folder / "data").mkdir(parents=True)
    for split, sentences in splits.items():
        table = {"tokens": [t for t, _ in sentences], "ner_tags": [g for _, g in sentences]}
        datasets.Dataset.from_dict(table, features=features).to_parquet(
            folder / "data" / f"{split}-00000-of-00001.parquet"
        )
    return folder


SENTENCES = {
    "train": [
        (["Gout", "flares", "hurt", "."], [1, 0, 0, 0]),
        (["Type", "2", "diabetes", "runs", "in", "families"], [1, 2, 2, 0, 0, 0]),
    ],
    "validation": [(["Asthma", "is", "common", "."], [1, 0, 0, 0])],
    "test": [(["Migraine", "can", "last", "days", "."], [1, 0, 0, 0, 0]), (["No", "findings", "."], [0, 0, 0])],
}


def hub_ner(folder: Path) -> list[str]:
    return [
        "tasks.ner.data.source=hub",
        f"tasks.ner.data.hub_id={folder}",
        "tasks.ner.data.path=conf/task/ner.yaml",
        "++tasks.ner.data.splits={train:train,validation:validation,test:test}",
        "++tasks.ner.data.columns={tokens:tokens,tags:ner_tags}",
        "tasks.ner.data.id_column=null",
    ]


def test_a_hub_dataset_keeps_its_own_splits_and_names_integer_tags_from_its_class_labels(tmp_path):
    folder = hub_folder(tmp_path / "ncbi-like", SENTENCES)
    project = make_project(mkdir(tmp_path / "project"), [qa(0)], hub_ner(folder))
    result = run_stage(project, "stages.prepare", "ner", "data/prepared/ner")
    assert result.returncode == 0, result.stderr
    stats, splits = prepared(project, "ner")
    assert splits["test"][0] == {
        "id": "test-000001",
        "tokens": ["Migraine", "can", "last", "days", "."],
        "tags": ["B-Disease", "O", "O", "O", "O"],
    }
    assert splits["train"][1]["tags"] == ["B-Disease", "I-Disease", "I-Disease", "O", "O", "O"]
    assert stats["splits"] == {s: f"given: hub split {s}" for s in ("train", "validation", "test")}
    assert stats["commit"] is None  # a local folder has no hub commit


def test_a_hub_dataset_is_read_at_its_resolved_commit_and_an_unpinned_revision_is_warned(tmp_path):
    """The hub's cache layout, offline: refs/main names the commit, snapshots/<commit>/ holds its files."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo_cache = tmp_path / "hub-cache" / "datasets--medtune-tests--ncbi-like"
    (repo_cache / "refs").mkdir(parents=True)
    (repo_cache / "refs" / "main").write_text(commit)
    hub_folder(repo_cache / "snapshots" / commit, SENTENCES)
    overrides = [*hub_ner("medtune-tests/ncbi-like"), "tasks.ner.data.revision=main"]
    project = make_project(mkdir(tmp_path / "project"), [qa(0)], overrides)
    env = {**STAGE_ENV, "HF_HUB_CACHE": str(tmp_path / "hub-cache")}
    result = subprocess.run(
        [sys.executable, "-m", "stages.prepare", "ner", "data/prepared/ner"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    stats, splits = prepared(project, "ner")
    assert stats["commit"] == commit and len(splits["test"]) == 2
    assert f"set tasks.ner.data.revision={commit} to read this exact version again" in result.stderr


# The ready configs for public corpora, each on a small authored fixture in the corpus's own shape.


def test_the_bc5cdr_config_reads_the_official_conll_files_as_its_three_splits(tmp_path):
    project = make_project(tmp_path, [qa(0)], ["task@tasks.ner=ner_bc5cdr"])
    corpus = mkdir(project / "data" / "external" / "bc5cdr")
    sentence = "Cisplatin\tB-Chemical\ncaused\tO\nacute\tB-Disease\nrenal\tI-Disease\nfailure\tI-Disease\n.\tO\n"
    other = "Aspirin\tB-Chemical\nrelieved\tO\nthe\tO\nheadache\tB-Disease\n.\tO\n"
    (corpus / "train.tsv").write_text(
        f"{sentence}\n{other}\n" + "".join(f"Patient\tO\n{i}\tO\n.\tO\n\n" for i in range(20))
    )
    (corpus / "devel.tsv").write_text("Fever\tB-Disease\nfollowed\tO\n.\tO\n")
    (corpus / "test.tsv").write_text(f"{other}\nMetformin\tB-Chemical\nlowers\tO\nglucose\tB-Chemical\n.\tO\n")
    result = run_stage(project, "stages.prepare", "ner", "data/prepared/ner")
    assert result.returncode == 0, result.stderr
    stats, splits = prepared(project, "ner")
    assert [r["tokens"][0] for r in splits["test"]] == ["Aspirin", "Metformin"]
    assert splits["test"][0] == {
        "id": "test-000001",
        "tokens": ["Aspirin", "relieved", "the", "headache", "."],
        "tags": ["B-Chemical", "O", "O", "B-Disease", "O"],
    }
    assert (stats["train"], stats["validation"], stats["test"]) == (22, 1, 2)
    assert stats["leakage"] == {"train~test": 1}  # the Aspirin sentence is in both: counted, and kept


def test_the_ncbi_disease_config_reads_the_hubs_parquet_conversion_with_its_label_names(tmp_path):
    """refs/convert/parquet holds one folder per split under the config's name, tags as ClassLabel integers."""
    import datasets

    folder = tmp_path / "ncbi-copy"
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-Disease", "I-Disease"])),
        }
    )
    for split, sentences in SENTENCES.items():
        mkdir(folder / "ncbi_disease" / split)
        table = {"id": [str(i) for i in range(len(sentences))], "tokens": [t for t, _ in sentences]}
        table["ner_tags"] = [g for _, g in sentences]
        datasets.Dataset.from_dict(table, features=features).to_parquet(
            folder / "ncbi_disease" / split / "0000.parquet"
        )
    project = make_project(
        mkdir(tmp_path / "project"), [qa(0)], ["task@tasks.ner=ner_ncbi_disease", f"tasks.ner.data.hub_id={folder}"]
    )
    result = run_stage(project, "stages.prepare", "ner", "data/prepared/ner")
    assert result.returncode == 0, result.stderr
    stats, splits = prepared(project, "ner")
    assert splits["test"][0]["tags"] == ["B-Disease", "O", "O", "O", "O"] and splits["test"][0]["id"] == "0"
    assert (stats["train"], stats["validation"], stats["test"]) == (2, 1, 2)


def test_the_cochrane_simplification_config_reads_the_authors_three_json_files(tmp_path):
    folder = mkdir(tmp_path / "cochrane-copy")
    pair = {
        "source": "Twelve trials (1,234 adults) compared drug A with placebo; it reduced pain scores (low certainty).",
        "target": "We found 12 studies in 1,234 adults. Drug A may reduce pain a little, but we are not sure.",
    }
    for split, n in (("train", 12), ("validation", 2), ("test", 3)):
        lines = [json.dumps({k: f"{v} ({split} {i})" for k, v in pair.items()}) for i in range(n)]
        write_lines(folder / f"{split}.json", lines)
    overrides = ["task@tasks.simplification=simplification_cochrane", f"tasks.simplification.data.hub_id={folder}"]
    project = make_project(mkdir(tmp_path / "project"), [qa(0)], overrides)
    result = run_stage(project, "stages.prepare", "simplification", "data/prepared/simplification")
    assert result.returncode == 0, result.stderr
    stats, splits = prepared(project, "simplification")
    assert (stats["train"], stats["validation"], stats["test"]) == (12, 2, 3)
    assert splits["test"][2]["prompt"].endswith("(test 2)") and splits["test"][2]["id"] == "test-000003"
