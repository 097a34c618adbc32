"""The epoch loop shared by unsupervised training and supervised pretraining.

`Loop` owns everything but two things: the labels of an epoch (`epoch_labels`) and the loss of a
batch (`loss`, with `after_step` for what follows the optimizer step). Reading order: `run_loop`
(one page: the whole run), `train_epoch` (one page: the whole epoch), then the helpers.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from oaecmlr.config import Config, plan_batchnorm
from oaecmlr.data.augment import AugParams, apply_params, sample_params
from oaecmlr.data.sampler import PKSampler
from oaecmlr.engine.batchnorm import apply_plan, sync_running_stats
from oaecmlr.engine.checkpoint import (
    FORMAT,
    VERSION,
    atomic_save,
    check_compatible,
    load_checkpoint,
    load_init_weights,
    restore_rng,
    rng_state,
)
from oaecmlr.engine.devices import fast_bf16, gpu_identity, resolve_device
from oaecmlr.engine.distributed import SINGLE, Dist
from oaecmlr.engine.evaluate import evaluate
from oaecmlr.engine.features import autocast
from oaecmlr.engine.health import Watch, gradient_norm, parameter_norm
from oaecmlr.engine.inference import Extraction
from oaecmlr.engine.provenance import provenance
from oaecmlr.engine.recorder import RunRecorder
from oaecmlr.engine.rundata import RunData
from oaecmlr.errors import ConfigError, RunFailed, StopRequested
from oaecmlr.models import build_model
from oaecmlr.store.metrics import Best, Evaluation
from oaecmlr.store.runs import RunDir
from oaecmlr.store.schema import (
    End,
    EpochEnd,
    EpochStart,
    Eval,
    Event,
    Failure,
    HealthWarning,
    Iter,
    Resume,
    Start,
    Stopped,
)


@dataclass
class EpochLabels:
    """An epoch's training targets, and where training stands inside the epoch (checkpointed)."""

    epoch: int
    labels: torch.Tensor  # (N,) int64 per training image, -1 = not trained on
    soft: torch.Tensor | None = None  # (M, C) CMLR soft labels of the images in soft_index
    soft_index: torch.Tensor | None = None
    iteration: int = 0  # the next iteration to run

    def state(self) -> dict:
        return {"epoch": self.epoch, "iteration": self.iteration, "labels": self.labels.cpu(),
                "soft": None if self.soft is None else self.soft.cpu(),
                "soft_index": None if self.soft_index is None else self.soft_index.cpu()}

    @classmethod
    def from_state(cls, state: dict) -> EpochLabels:
        return cls(state["epoch"], state["labels"], state["soft"], state["soft_index"], state["iteration"])


@dataclass
class Targets:
    """EpochLabels on the training device: a batch's hard labels and soft label rows."""

    hard: torch.Tensor
    soft: torch.Tensor | None = None
    soft_row: torch.Tensor | None = None  # (N,) row of each image in `soft`, -1 if none

    @classmethod
    def of(cls, labels: EpochLabels, device: torch.device) -> Targets:
        hard = labels.labels.to(device)
        if labels.soft is None:
            return cls(hard)
        row = torch.full((hard.numel(),), -1, dtype=torch.long, device=device)
        row[labels.soft_index.to(device)] = torch.arange(labels.soft.shape[0], device=device)
        return cls(hard, labels.soft.to(device), row)

    def soft_of(self, index: torch.Tensor) -> torch.Tensor | None:
        return None if self.soft is None else self.soft[self.soft_row[index]]


class Loop:
    kind = "base"

    def __init__(self, config: Config, run: RunDir, data: RunData, device: torch.device,
                 recorder: RunRecorder | None, dist: Dist = SINGLE, num_classes: int | None = None):
        device = resolve_device(device)  # `cuda` -> `cuda:N`: only then does it equal the image cache's tensor.device
        if dist.active and dist.device != device:
            raise ValueError(f"the loop trains on {device} but its collectives run on {dist.device}")
        self.config, self.run, self.data, self.device, self.recorder, self.dist = config, run, data, device, recorder, dist
        cfg = config
        self.out_size = (cfg.data.height, cfg.data.width)
        self.amp = cfg.train.amp and fast_bf16(device)
        self.extraction = Extraction.of(cfg, device)  # as `oaecmlr eval` extracts
        per_rank = cfg.data.num_ids // dist.world_size * cfg.data.num_instances
        try:
            self.bn_plan = plan_batchnorm(cfg.train.bn_group, per_rank * dist.world_size, dist.world_size)
        except ValueError as exc:  # torchrun decides the world size only now
            raise ConfigError(str(exc)) from None
        self.channels_last = cfg.train.channels_last
        torch.manual_seed(cfg.run.seed)
        self.core = build_model(cfg.model.arch, cfg.model.pretrained or None, cfg.model.pooling, cfg.model.last_stride,
                                num_classes=num_classes)
        if cfg.model.init:
            load_init_weights(self.core, cfg.model.init, cfg.model.arch)
        self.core.to(device)
        if self.channels_last:
            self.core.to(memory_format=torch.channels_last)
        self.model = self.wrap_model(self.core)
        params = [p for p in self.core.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, cfg.optim.step_size, cfg.optim.gamma)
        self.augment_generator = torch.Generator().manual_seed(cfg.run.seed)
        self.best: Best | None = None
        self.epoch_in_progress: int | None = None
        self.watch = Watch()
        self._epoch_start = time.perf_counter()
        self._interval_loss = torch.zeros((), device=device)
        self._interval_start = time.perf_counter()
        self._interval_images = 0
        self.gpus = [g for g in dist.all_gather_object(gpu_identity(device)) if g]  # every rank's GPU, for provenance
        self._interval_iterations = 0

    # what the subclasses say ------------------------------------------------------------------------
    def epoch_labels(self, epoch: int) -> EpochLabels:
        raise NotImplementedError

    def loss(self, output, y: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def start_epoch(self, labels: EpochLabels, global_batches: np.ndarray) -> None:
        """Before the first (or, after a resume, the next) iteration of an epoch; `global_batches`
        are the (iterations, P x K) sample indices of all ranks, on the host."""

    def after_step(self, output, y: torch.Tensor, index: torch.Tensor, iteration: int) -> None:
        """After the optimizer step (the cluster memory moves here); `index` is this rank's batch."""

    def train_module(self) -> torch.nn.Module:
        """What one training step calls: the model itself (a subclass may wrap it)."""
        return self.core

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        """Restore what `extra_state` saved."""

    # the run ------------------------------------------------------------------------------------------
    def run_loop(self, resume: bool) -> Best | None:
        cfg = self.config
        labels, first_epoch = self.begin(resume)
        for epoch in range(first_epoch, cfg.run.epochs + 1):
            self.epoch_in_progress = epoch
            if labels is None or labels.epoch != epoch:
                self.emit(EpochStart(epoch=epoch, lr=self.optimizer.param_groups[0]["lr"]))
                self._epoch_start = time.perf_counter()
                labels = self.epoch_labels(epoch)
                self.stop_if_requested(labels, labels.iteration)  # after a long clustering, before training
            self.train_epoch(labels)
            pointless = self.watch.end_of_epoch(epoch)
            if self.dist.any(pointless is not None):
                raise self.fail(pointless or "a worker found the loss stuck at 0")
            self.sync_batchnorm()
            self.scheduler.step()
            if epoch % cfg.run.eval_every == 0 or epoch == cfg.run.epochs:
                self.evaluate(epoch)
            self.emit(EpochEnd(epoch=epoch, seconds=round(time.perf_counter() - self._epoch_start, 3)))
            self.save_checkpoint(epoch, None)
            labels = None
            if epoch < cfg.run.epochs:
                self.stop_if_requested(None, 0, next_epoch=epoch + 1)
        self.emit(End(status="finished", best=None if self.best is None else self.best.to_dict()))
        if self.recorder:
            self.recorder.set_status("finished")
        return self.best

    def begin(self, resume: bool) -> tuple[EpochLabels | None, int]:
        """Restore the last checkpoint (resume), or start: the start event and the epoch-0 evaluation."""
        if resume and self.dist.broadcast_object(self.run.last.is_file()):
            return self.restore()
        # A resumed run that never finished an epoch has nothing to restore: start it over.
        discarded = self.recorder.truncate_events(0) if resume and self.recorder else 0
        self.emit_start(restarted=resume, discarded_events=discarded)
        self.evaluate(0)
        return None, 1

    def train_epoch(self, labels: EpochLabels) -> None:
        """The iterations of one epoch, from `labels.iteration` on: PK batch -> augmented images ->
        forward -> loss -> backward -> step -> `after_step` -> events and stop requests."""
        targets = Targets.of(labels, self.device)
        batches, host_batches, global_batches = self.epoch_batches(labels)
        self.start_epoch(labels, global_batches)
        self.model.train()
        if self.watch.first_weights is None:  # the baseline of the weight-growth check: before any step
            self.watch.first_weights = float(parameter_norm(self.core))
        self._interval_start = time.perf_counter()  # images/s: training only, not the clustering or evaluation before
        for iteration in range(labels.iteration, batches.shape[0]):
            index = batches[iteration]
            x = self.batch_images(index, host_batches[iteration])
            y = targets.hard[index]
            with autocast(self.device, self.amp):
                output = self.model(x)
            loss = self.loss(output, y, targets.soft_of(index))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gradients = gradient_norm(self.core) if self.logs_at(iteration, batches.shape[0]) else None
            self.optimizer.step()
            self.after_step(output, y, index, iteration)
            self.after_iteration(labels, iteration, batches.shape[0], loss.detach(), x.shape[0], gradients)

    # the model on several workers ---------------------------------------------------------------------
    def wrap_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """BatchNorm statistics groups of `train.bn_group`; several workers: DistributedDataParallel.
        Outside whole-batch BatchNorm each worker keeps its own running statistics until
        `sync_batchnorm` (so DDP does not broadcast buffers)."""
        cuda = self.device.type == "cuda"
        apply_plan(model, self.bn_plan, world_size=self.dist.world_size, rank=self.dist.rank, cuda=cuda,
                   running=self.config.train.bn_running, distributed=self.dist.active)
        if not self.dist.active:
            return self.train_module()
        return DistributedDataParallel(self.train_module(), device_ids=[self.device.index] if cuda else None,
                                       broadcast_buffers=self.bn_plan.mode == "whole")

    def sync_batchnorm(self) -> None:
        """Every worker's BatchNorm running statistics made the plan's (before features or checkpoints)."""
        if self.bn_plan.mode != "whole":
            sync_running_stats(self.core, self.config.train.bn_running, self.dist.world_size)

    # events, features, evaluation -----------------------------------------------------------------------
    def emit(self, event: Event) -> None:
        if self.recorder is not None:
            self.recorder.emit(event)

    def emit_start(self, restarted: bool = False, discarded_events: int = 0) -> None:
        cfg = self.config
        if self.recorder is None:
            return
        per_rank = cfg.data.num_ids // self.dist.world_size * cfg.data.num_instances
        self.recorder.start(Start(schema=0, kind=self.kind, run=self.run.name, dataset=cfg.data.dataset,
                                 epochs=cfg.run.epochs, iterations=cfg.run.iterations, arch=cfg.model.arch,
                                 world_size=self.dist.world_size, per_rank_batch=per_rank,
                                 global_batch=per_rank * self.dist.world_size, lr=cfg.optim.lr, device=str(self.device),
                                 seed=cfg.run.seed, data=self.data.stats, restarted=restarted,
                                 discarded_events=discarded_events,
                                 provenance=provenance(self.device, self.gpus, cfg.train.deterministic)))

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """Features of all `images`, each rank extracting a contiguous shard, gathered in order."""
        n, world, batch = images.shape[0], self.dist.world_size, self.config.data.eval_batch
        # Whole evaluation batches per rank, so every image sees the same batch as in one process.
        batches = -(-n // batch)
        bounds = [min(n, batch * (batches * r // world)) for r in range(world + 1)]
        counts = [bounds[r + 1] - bounds[r] for r in range(world)]
        start = bounds[self.dist.rank]
        local = self.extraction.features(self.core, images, self.device,
                                         rows=range(start, start + counts[self.dist.rank]))
        return self.dist.gather_rows(local, counts)

    def evaluate(self, epoch: int) -> Evaluation | None:
        """Score the model after `epoch` (on rank 0; None on the others), and keep best.pt."""
        result = evaluate(self.extract, self.data.query, self.data.gallery, main=self.dist.is_main)
        if result is None:
            return None
        self.emit(Eval(epoch=epoch, **result.to_dict()))
        if epoch > 0 and (self.best is None or result.metrics.mAP > self.best.metrics.mAP):
            self.best = Best(epoch=epoch, metrics=result.metrics)
            atomic_save(self.model_checkpoint(epoch, result.to_dict()), self.run.best)
        return result

    # iterations ------------------------------------------------------------------------------------------
    def augment(self, images_u8: torch.Tensor) -> torch.Tensor:
        """Train augmentation of this rank's slice of the global batch. The random parameters are
        drawn for the whole global batch on every rank, so they do not depend on the world size."""
        data = self.config.data
        local = images_u8.shape[0]
        params = sample_params(local * self.dist.world_size, self.out_size, self.augment_generator,
                               data.flip_p, data.pad, data.erase_p)
        mine = slice(self.dist.rank * local, (self.dist.rank + 1) * local)
        params = AugParams(params.flip[mine], params.offset[mine], params.erase[mine]).to(images_u8.device)
        return apply_params(images_u8, self.out_size, params, data.pad, self.channels_last)

    def epoch_batches(self, labels: EpochLabels) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """This rank's (iterations, batch) sample indices of the epoch (PK batches of the labels), on
        the training device and on the host (for a host image cache: no device-to-host sync), and the
        global batches of all ranks on the host."""
        cfg = self.config
        sampler = PKSampler(labels.labels.numpy(), self.data.train.camids, num_instances=cfg.data.num_instances,
                            num_ids=cfg.data.num_ids, num_iterations=cfg.run.iterations, seed=cfg.run.seed,
                            epoch=labels.epoch, rank=self.dist.rank, world_size=self.dist.world_size,
                            rule=cfg.data.sampler)
        host = torch.from_numpy(sampler.batches())
        if host.numel() == 0:
            raise self.fail(f"epoch {labels.epoch}: nothing to train on (no clustered samples)")
        return host.to(self.device), host, sampler.global_batches()

    def batch_images(self, index: torch.Tensor, host_index: torch.Tensor) -> torch.Tensor:
        """The augmented images of a batch of sample indices, on the training device."""
        images = self.data.train.images
        if images.device == self.device:
            return self.augment(images[index])
        picked = images[host_index]  # a host cache: gather there, copy to the device asynchronously
        if images.is_pinned():
            picked = picked.pin_memory()
        return self.augment(picked.to(self.device, non_blocking=True))

    def logs_at(self, iteration: int, total: int) -> bool:
        done = iteration + 1
        return done % self.config.run.log_every == 0 or done == total

    def after_iteration(self, labels: EpochLabels, iteration: int, total: int, loss: torch.Tensor, batch: int,
                        gradients: torch.Tensor | None = None) -> None:
        """Accumulate the loss without a host sync; every `log_every` iterations (and at the end of the
        epoch) check it and the norms and emit an iteration event. A stop request is honoured after
        any iteration (see `checks_stop_after`), with the event of the interval so far."""
        self._interval_loss += loss.float()
        self._interval_images += batch * self.dist.world_size
        self._interval_iterations += 1
        done = iteration + 1
        stop = self.requested_stop() if done < total and self.checks_stop_after(done) else None
        if not self.logs_at(iteration, total) and stop is None:
            return
        mean_loss = float(self.dist.mean(self._interval_loss)) / self._interval_iterations  # the global batch's
        elapsed = time.perf_counter() - self._interval_start
        lr = self.optimizer.param_groups[0]["lr"]
        if self.dist.any(not math.isfinite(mean_loss)):
            kept = (f"the last checkpoint ({self.run.last.name}) is kept" if self.run.last.is_file()
                    else "there is no checkpoint yet")
            raise self.fail(f"loss became {mean_loss} at epoch {labels.epoch} iteration {done}; {kept}; "
                            f"lower optim.lr (now {lr:g})")
        self.check_health(labels.epoch, mean_loss, gradients, lr)
        self.emit(Iter(epoch=labels.epoch, iteration=done, total_iterations=total, loss=round(mean_loss, 5), lr=lr,
                       images_per_s=round(self._interval_images / max(elapsed, 1e-9), 2)))
        self._interval_loss.zero_()
        self._interval_images = 0
        self._interval_iterations = 0
        self._interval_start = time.perf_counter()
        if stop is not None:
            self.stop_at(stop, labels, done)

    def checks_stop_after(self, done: int) -> bool:
        """Whether to look for a stop request after `done` iterations: after every one, except with
        several CUDA workers, where the all-reduce that agrees on it would sync the host with the GPU
        each iteration; they look at log intervals, as they log."""
        return not (self.dist.active and self.device.type == "cuda") or done % self.config.run.log_every == 0

    def requested_stop(self) -> str | None:
        """The reason to stop, on every rank when any rank (in practice rank 0) was asked to."""
        reason = self.recorder.stop_reason() if self.recorder else None
        if not self.dist.any(reason is not None):
            return None
        return reason or "stopped by rank 0"

    def stop_if_requested(self, labels: EpochLabels | None, iteration: int, next_epoch: int | None = None) -> None:
        reason = self.requested_stop()
        if reason is not None:
            self.stop_at(reason, labels, iteration, next_epoch)

    def stop_at(self, reason: str, labels: EpochLabels | None, iteration: int, next_epoch: int | None = None) -> None:
        """Stop at a safe point: checkpoint where training stands (inside an epoch: its labels and the
        next iteration), write the `stopped` event and raise StopRequested."""
        epoch = labels.epoch if labels is not None else next_epoch
        self.emit(Stopped(epoch=epoch, iteration=iteration, reason=reason))
        if labels is not None:
            labels.iteration = iteration
            self.sync_batchnorm()
            self.save_checkpoint(labels.epoch - 1, labels)
        if self.recorder:
            self.recorder.set_stopped()
        raise StopRequested(reason)

    def check_health(self, epoch: int, mean_loss: float, gradients: torch.Tensor | None, lr: float) -> None:
        """Warnings for exploding norms and a zero loss; a failure when the weights have exploded."""
        warning, fatal = self.watch.check_weights(float(parameter_norm(self.core)), lr)
        findings = [("weights", warning)]
        if gradients is not None:
            findings.append(("gradients", self.watch.check_gradients(float(gradients), lr)))
        findings.append(("loss", self.watch.check_loss(mean_loss)))
        if self.dist.any(fatal is not None):
            raise self.fail(fatal or "a worker found the weights exploded")
        for what, message in findings:
            if message:
                self.emit(HealthWarning(what=what, message=message, epoch=epoch))

    def fail(self, message: str) -> RunFailed:
        self.emit(Failure(epoch=self.epoch_in_progress, error=message, rank=self.dist.rank))
        if self.recorder:
            self.recorder.set_status("failed", error=message)
        return RunFailed(message)

    # checkpoints -----------------------------------------------------------------------------------------
    def model_checkpoint(self, epoch: int, metrics: dict | None = None) -> dict:
        cfg = self.config
        return {"format": FORMAT, "version": VERSION, "kind": self.kind, "arch": cfg.model.arch,
                "dataset": cfg.data.dataset, "num_train": len(self.data.train), "epoch": epoch,
                "model": self.core.state_dict(), "metrics": metrics}

    def save_checkpoint(self, completed_epoch: int, labels: EpochLabels | None) -> None:
        """last.pt after `completed_epoch`; with `labels`, also the position inside the next epoch."""
        if not self.dist.is_main:
            return
        state = self.model_checkpoint(completed_epoch)
        state.update(optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
                     rng=rng_state(self.augment_generator), best=None if self.best is None else self.best.to_dict(),
                     events_offset=self.recorder.events.offset() if self.recorder else 0,
                     epoch_labels=None if labels is None else labels.state(), **self.extra_state())
        atomic_save(state, self.run.last)

    def restore(self) -> tuple[EpochLabels | None, int]:
        cfg = self.config
        state = load_checkpoint(self.run.last)
        check_compatible(state, self.run.last, cfg.model.arch, cfg.data.dataset, len(self.data.train))
        self.core.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.load_extra_state(state)
        restore_rng(state["rng"], self.augment_generator)
        self.best = Best.from_dict(state.get("best"))
        saved = state.get("epoch_labels", state.get("phase"))  # "phase": checkpoints written before the rename
        labels = EpochLabels.from_state(saved) if saved else None
        if self.recorder is not None:
            discarded = self.recorder.truncate_events(state["events_offset"])
            self.recorder.set_status("running", resumed=time.time())
            self.emit(Resume(from_epoch=state["epoch"], iteration=labels.iteration if labels else 0,
                             discarded_events=discarded, world_size=self.dist.world_size, pid=os.getpid(),
                             epochs=cfg.run.epochs, gpus=self.gpus))
        return labels, (labels.epoch if labels else state["epoch"] + 1)
