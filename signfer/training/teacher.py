"""Teachers for knowledge distillation: trained FER models whose averaged
predictions become a student's training targets.

The teachers see exactly the student's (augmented, mixed) batch, each at its
own input size and normalisation, and their class probabilities are averaged
over the teachers and over the mirrored batch ("consistent" distillation,
Beyer et al. 2022).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from signfer.data.spec import PreprocessSpec
from signfer.errors import SignferError
from signfer.labels import canonical
from signfer.models.checkpoint import ModelMeta, load_model


class Teachers:
    """An ensemble of checkpoints (built-in names or paths) that predicts the
    class probabilities of model-input batches, in the order of ``classes``.

    Args:
        names: the teacher checkpoints.
        classes: the student's label order; every teacher must know each label.
        device: where the teachers run.
    """

    def __init__(self, names: Sequence[str], classes: Sequence[str], device: torch.device | str = "cpu"):
        if not names:
            raise SignferError("distillation needs at least one teacher")
        self.names = list(names)
        self.members: list[tuple[torch.nn.Module, ModelMeta, list[int]]] = []
        for name in self.names:
            model, meta = load_model(name)
            if meta.equalize:
                raise SignferError(f"teacher {name!r} expects histogram-equalised faces; "
                                   "distillation feeds teachers the student's batches as they are")
            known = [canonical(c) for c in meta.labels]
            missing = [c for c in classes if canonical(c) not in known]
            if missing:
                raise SignferError(f"teacher {name!r} does not know the classes {missing}")
            columns = [known.index(canonical(c)) for c in classes]
            model = model.to(device=device, memory_format=torch.channels_last)
            self.members.append((model, meta, columns))

    @torch.no_grad()  # not inference_mode: the targets enter the student's autograd graph
    def __call__(self, x: torch.Tensor, student: PreprocessSpec, bf16: bool = False) -> torch.Tensor:
        """Averaged class probabilities (``B x classes``, float32) of the student
        batch ``x``, which ``student`` (the student's spec) prepared: it is turned
        back into pixels and prepared again by each teacher's own spec."""
        pixels = student.denormalize(x.float())
        total = torch.zeros(len(x), len(self.members[0][2]), device=x.device)
        for model, meta, columns in self.members:
            side = meta.input_size
            inp = pixels
            if inp.shape[-1] != side or inp.shape[-2] != side:
                inp = F.interpolate(inp, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
            inp = meta.spec.normalize(inp)
            both = torch.cat([inp, inp.flip(-1)]).contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(both)  # the batch and its mirror image in one pass
            probs = torch.softmax(logits.float(), 1)[:, columns]
            total += probs[:len(x)] + probs[len(x):]
        return total / (2 * len(self.members))

