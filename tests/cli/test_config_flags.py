"""Verbs map their flags onto the config dataclasses in one place (cli/options.config_from_flags):
every flag lands in its field, and a bad value is refused once, naming the flag."""

from lmforge.cli import build_parser, main
from lmforge.cli import data as data_cli
from lmforge.cli import finetune as finetune_cli
from lmforge.data.clean import CleanConfig


def _prepare_args(*extra):
    return build_parser().parse_args(["data", "prepare", "--out", "d", "--source", "s.txt", *extra])


def test_every_data_prepare_flag_reaches_its_config_field():
    args = _prepare_args(
        "--min-chars", "7", "--max-chars", "900", "--max-line-chars", "80", "--max-symbol-ratio", "0.5",
        "--max-dup-line-frac", "0.6", "--near-threshold", "0.9", "--max-filter-frac", "0.4", "--no-dedup",
        "--doc-split", "lines", "--doc-chars", "300", "--encoding", "latin-1", "--max-doc-chars", "5000",
        "--skip-bad-lines", "--cache-dir", "cache", "--tokenizer", "char", "--vocab-size", "99",
        "--split", "tail", "--val-fraction", "0.2",
    )  # fmt: skip
    clean = data_cli.clean_config(args)
    assert clean == CleanConfig(7, 900, 80, 0.5, 0.6, False, False, 0.9, max_filter_frac=0.4)
    sources, collect = data_cli.collect_config(args)
    assert [s.spec for s in sources] == ["s.txt"]
    assert (collect.doc_split, collect.doc_chars, collect.encoding) == ("lines", 300, "latin-1")
    assert (collect.max_doc_chars, collect.skip_bad_lines, str(collect.cache_dir)) == (5000, True, "cache")
    tok = data_cli.tokenizer_config(args)
    assert (tok.kind, tok.vocab_size) == ("char", 99)
    split = data_cli.split_config(args)
    assert (split.mode, split.val_fraction) == ("tail", 0.2)


def test_unset_flags_keep_the_dataclass_defaults():
    assert data_cli.clean_config(_prepare_args()) == CleanConfig()


def test_a_task_flag_out_of_its_setting_range_is_one_error_naming_the_flag(tmp_path, capsys):
    argv = ["finetune", "run", "--task", "classify", "--train", "t.jsonl", "--out", str(tmp_path / "o")]
    assert main([*argv, "--lora-rank", "-1"]) == 2
    assert capsys.readouterr().err == "error: --lora-rank (-1) must be in [0, 65536]\n"
    assert main([*argv, "--lora-alpha", "nan"]) == 2
    assert capsys.readouterr().err == "error: --lora-alpha (nan) must be a finite number\n"


def test_every_task_flag_is_a_finetune_task_keyword():
    import inspect

    from lmforge.finetune.tasks import finetune_task

    keywords = set(inspect.signature(finetune_task).parameters)
    args = build_parser().parse_args(["finetune", "run", "--task", "ner", "--out", "o"])
    assert set(finetune_cli.task_settings(args)) | set(finetune_cli.common_settings(args)) <= keywords
