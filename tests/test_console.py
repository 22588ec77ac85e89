"""Console lines in English and Chinese, the banner and the summary."""
import io

import pytest

import trackkit
from trackkit.runinfo import RunInfo
from trackkit.trackers.console import ConsoleTracker

METRICS = {"train/loss": 4.2345, "train/perplexity": 68.45, "train/learning_rate": 8.5e-05,
           "train/epoch": 1, "train/batch": 125, "train/elapsed_time": 1.23}


# What the reference trainer passes: the guide's line, with the epoch and batch totals.
GUIDE_LINE = dict(console_fields=["epoch", "batch", "loss", "perplexity", "learning_rate", "elapsed_time"],
                  console_totals={"epoch": 10, "batch": 500})


def drive(lang):
    out = io.StringIO()
    console = ConsoleTracker(console_lang=lang, stream=out, **GUIDE_LINE)
    run = RunInfo(name="demo", id="abc", project="p", dir="runs/demo")
    console.trackkit_start(run, {"learning_rate": 3e-4})
    console.trackkit_log_train(METRICS, 250)
    console.trackkit_log_eval({"eval/loss": 3.8934, "eval/perplexity": 49.12}, 500)
    console.trackkit_finish("success", {"final": {"final/best_perplexity": 49.12}, "trackers": {
        "console": {"state": "ok", "delivered": 3, "lost": 0}}})
    return out.getvalue().splitlines()


def test_english_lines():
    lines = drive("en")
    assert "step    250 | epoch  1/10 | batch  125/500 | loss 4.2345 | ppl  68.45 | lr 8.5e-05 | time 1.23s" in lines
    assert "--- Evaluation at step 500 ---" in lines
    assert "Evaluation done - avg loss: 3.8934, perplexity: 49.12" in lines
    assert lines[0] == "Run demo (abc) -> runs/demo"
    assert "  learning_rate  0.0003" in lines
    assert "Run demo finished: success" in lines
    assert "  tracker console: ok, 3 delivered, 0 lost" in lines


def test_chinese_lines_follow_the_guide():
    lines = drive("zh")
    guide = "步骤    250 | 轮次  1/10 | 批次  125/500 | 损失 4.2345 | 困惑度  68.45 | 学习率 8.5e-05 | 用时 1.23s"
    assert guide in lines
    assert "--- 第 500 步评估 ---" in lines
    assert "评估完成 - 平均损失: 3.8934, 困惑度: 49.12" in lines
    assert "运行 demo 结束: 成功" in lines and "  记录器 console: 正常, 已送达 3, 丢失 0" in lines


def test_a_loop_that_logs_only_a_loss_gets_a_sensible_line_and_summary():
    out = io.StringIO()
    console = ConsoleTracker(console_lang="en", stream=out)
    console.trackkit_start(RunInfo(name="demo", id="abc", project="p", dir="runs/demo"), {})
    console.trackkit_log_train({"train/loss": 2.5}, 10)
    console.trackkit_log_train({"train/loss": 2.25, "train/accuracy": 0.125, "train/tokens": 640}, 20)
    console.trackkit_log_eval({"eval/accuracy": 0.5}, 20)
    console.trackkit_log_epoch({"epoch/accuracy": 0.5}, 1)
    console.trackkit_finish("failed", {"final": {"final/accuracy": 0.5}, "trackers": {}})
    lines = out.getvalue().splitlines()
    assert "step     10 | loss 2.5000" in lines
    assert "step     20 | loss 2.2500 | accuracy 0.125 | tokens 640" in lines
    assert "Evaluation done - accuracy 0.5" in lines
    assert "Epoch 1 done - accuracy 0.5" in lines
    assert lines[-2:] == ["Run demo finished: failed", "  final/accuracy  0.5000"]


@pytest.mark.parametrize("env, lang", [({"LANG": "zh_CN.UTF-8"}, "zh"), ({"LANG": "en_US.UTF-8"}, "en"),
                                       ({"LC_ALL": "zh_TW.UTF-8", "LANG": "en_US.UTF-8"}, "zh"),
                                       ({"TRACKKIT_CONSOLE_LANG": "zh", "LANG": "en_US.UTF-8"}, "zh"),
                                       ({"TRACKKIT_CONSOLE_LANG": "en", "LANG": "zh_CN.UTF-8"}, "en")])
def test_language_follows_the_variable_then_the_locale(monkeypatch, env, lang):
    for var in ("LC_ALL", "LC_MESSAGES", "LANG", "TRACKKIT_CONSOLE_LANG"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    from trackkit.messages import default_lang
    assert default_lang() == lang


def test_no_progress_bar_in_a_pipe(tmp_path, capfd):
    options = {"console_fields": ["batch", "loss"], "console_totals": {"batch": 4}}
    with trackkit.start(["console"], output_dir=tmp_path, options=options) as run:
        run.log_train({"loss": 1.0, "batch": 2}, step=2)
    out = capfd.readouterr().out
    assert "\r" not in out and "[#" not in out
    assert "step      2 | batch    2/4 | loss 1.0000" in out


class CountingStream(io.StringIO):
    """A stream that counts its writes; a terminal if asked."""

    def __init__(self, tty=False):
        super().__init__()
        self.writes, self.tty = 0, tty

    def write(self, text):
        self.writes += 1
        return super().write(text)

    def isatty(self):
        return self.tty


def started(stream):
    console = ConsoleTracker(console_lang="en", stream=stream, console_fields=["batch", "loss"],
                             console_totals={"batch": 4})
    console.trackkit_start(RunInfo(name="demo", id="abc", project="p", dir="runs/demo"), {})
    return console


def test_lines_are_written_in_one_piece_at_each_flush():
    out = CountingStream()
    console = started(out)
    before = out.writes
    for step in range(1, 21):
        console.trackkit_log_train({"train/loss": 1.0, "train/batch": step % 4}, step)
    assert out.writes == before  # nothing until the layer flushes
    console.trackkit_flush()
    assert out.writes == before + 1
    lines = out.getvalue().splitlines()
    assert [line.split("|")[0].strip() for line in lines[-20:]] == [f"step {step:6d}" for step in range(1, 21)]
    console.trackkit_flush()
    assert out.writes == before + 1  # an idle flush writes nothing


def test_on_a_terminal_the_bar_stays_below_the_lines_and_leaves_before_the_summary():
    out = CountingStream(tty=True)
    console = started(out)
    start = len(out.getvalue())
    console.trackkit_log_train({"train/loss": 1.0, "train/batch": 1}, 1)
    console.trackkit_log_train({"train/loss": 0.9, "train/batch": 2}, 2)
    console.trackkit_flush()
    assert out.getvalue()[start:].endswith("loss 0.9000\n[###############               ]  50%")
    start = len(out.getvalue())
    console.trackkit_log_eval({"eval/loss": 0.8, "eval/perplexity": 2.23}, 2)
    console.trackkit_flush()
    assert out.getvalue()[start:] == (  # the bar erased, not drawn again
        "\r\033[K--- Evaluation at step 2 ---\nEvaluation done - avg loss: 0.8000, perplexity: 2.23\n")
    console.trackkit_log_train({"train/loss": 0.7, "train/batch": 3}, 3)
    console.trackkit_finish("success", {"final": {}, "trackers": {}})
    tail = out.getvalue()[start:]
    assert tail.endswith("Run demo finished: success\n") and "%" not in tail.split("step      3")[1]


def test_every_line_trackkit_prints_is_chinese_with_console_lang_zh(tmp_path, capfd):
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes(b"w")
    options = {"console_lang": "zh", **GUIDE_LINE}
    with trackkit.start(["console", "jsonl", "trackers_for_tests:Failing"], output_dir=tmp_path / "run",
                        options=options) as run:
        run.log_train({"loss": float("nan"), "epoch": 1, "batch": 2}, step=2)
        run.log_artifact(checkpoint, name="best", kind="model")
        run.log_final({"best_perplexity": 3.5})
    out, err = capfd.readouterr()
    assert "已保存 model best: " in out and "运行 run 结束: 成功" in out
    assert "  记录器 failing: 失败, 已送达 0, 丢失 3" in out
    assert "trackkit: train/loss 在第 2 步为 nan; 按原值记录 (此后它的非有限值不再提示)" in err
    assert "trackkit: 记录器 'failing' 在 trackkit_log_train 中出错: RuntimeError: backend down at step 2" in err
    assert "trackkit: 记录器 'failing' 缺少本次运行的 3 条记录; 之后可用此命令补上: trackkit sync" in err
    lines = [line for line in (out + err).splitlines() if line.strip()]
    english = [line for line in lines if not any("\u4e00" <= c <= "\u9fff" for c in line)]
    # What is not Chinese is a value (the final metrics' table), never a sentence or a notice.
    assert english == ["  final/best_perplexity  3.5000"], english


def test_every_catalog_says_each_thing_in_both_languages_with_the_same_fields():
    from string import Formatter

    from reference_trainer.lines import LINES
    from trackkit.messages import LABELS, LANGUAGES, NOTICES, TEXT, WORDS

    def fields(text: str) -> set[str]:
        return {name for _, name, _, _ in Formatter().parse(text) if name}

    def flat(table: dict, prefix: str = "") -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in table.items():
            out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
        return out

    by_language = [LABELS, TEXT, WORDS]  # {lang: {key: text}}
    by_key = [NOTICES, LINES]  # {key: {lang: text}}
    catalogs = [{lang: flat(c[lang]) for lang in LANGUAGES} for c in by_language]
    catalogs += [{lang: {key: texts[lang] for key, texts in c.items()} for lang in LANGUAGES} for c in by_key]
    for catalog in catalogs:
        en, zh = (catalog[lang] for lang in LANGUAGES)
        assert en.keys() == zh.keys()
        assert {k: fields(v) for k, v in en.items()} == {k: fields(v) for k, v in zh.items()}
