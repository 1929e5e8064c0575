"""The progress bar costs next to nothing per step: it redraws on its own clock, not on every step."""

from lmforge.train.logbook import Logbook, Speed


def test_progress_bar_redraws_on_its_clock_not_every_step(tmp_path, capsys):
    book = Logbook(tmp_path, tensorboard=False, total=1000, initial=0, progress=True, main=True)
    speed = Speed(flops_per_token=1000, peak=1e12)
    speed.tokens_per_second, speed.mfu = 30_000.0, 0.4
    for step in range(200):  # far quicker than the bar's 0.5 s mininterval
        book.show_step(2.5 - step * 1e-3, speed)
    assert book.bar.n == 200
    book.close()
    err = capsys.readouterr().err
    assert "30.0k tok/s" in err  # the final redraw shows the postfix
    assert err.count("tok/s") < 10  # not one redraw per step (200 before)


def test_no_bar_no_work(tmp_path, capsys):
    book = Logbook(tmp_path, tensorboard=False, total=10, initial=0, progress=False, main=True)
    book.show_step(2.5, Speed(1000, 1e12))
    book.close()
    assert capsys.readouterr().err == ""
