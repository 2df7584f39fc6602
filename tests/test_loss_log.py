"""The trainers' shared pieces: the CSV loss log and the learning-rate schedule."""

from __future__ import annotations

import torch

from lwst.loss_log import LossLog
from lwst.lr_schedule import warmup_cosine, warmup_cosine_factor, warmup_steps


def _write(path, steps, start=0):
    log = LossLog(path, start)
    for step in steps:
        log.write({"step": step, "loss": f"{1 / step:.4f}", "seconds": f"{step * 1.5:.1f}"})
    log.close()
    return log


def test_a_resumed_log_drops_the_rows_it_trains_again_and_goes_on_counting(tmp_path):
    path = tmp_path / "loss.csv"
    _write(path, [1, 2, 3, 4])
    resumed = LossLog(path, 2)
    assert resumed.last("seconds") == 3.0 and resumed.last("nothing") == 0.0
    resumed.write({"step": 3, "loss": "0.3333", "seconds": "4.5"})
    resumed.close()
    assert path.read_bytes() == b"step,loss,seconds\n1,1.0000,1.5\n2,0.5000,3.0\n3,0.3333,4.5\n"
    _write(path, [1])  # a new run replaces the file
    assert path.read_text() == "step,loss,seconds\n1,1.0000,1.5\n"


def test_the_schedule_resumed_at_a_step_gives_the_uninterrupted_rates():
    steps, lr = 40, 1e-3
    warmup = warmup_steps(100, steps)
    assert warmup == 4 and warmup_steps(100, 5) == 1 and warmup_steps(0, 5) == 0

    def factor(step):
        return warmup_cosine_factor(step, warmup, step / steps, floor=0.05)

    def rates(start, stop, optimiser):
        schedule = warmup_cosine(optimiser, lr, factor, start)
        out = []
        for _ in range(start, stop):
            out.append(optimiser.param_groups[0]["lr"])
            optimiser.step()
            schedule.step()
        return out

    def optimiser():
        return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)

    straight = rates(0, steps, optimiser())
    first = optimiser()
    resumed = rates(0, 10, first)
    again = optimiser()
    again.load_state_dict(first.state_dict())  # holds the last step's rate, not the peak
    resumed += rates(10, steps, again)
    assert resumed == straight
    assert straight[0] == lr / warmup and max(straight) == lr
    assert straight[-1] > 0.05 * lr
