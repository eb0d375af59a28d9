"""swiftstudy's engine, the naive loop, Bergson and Kronfluence on the same work, side by side.

Run alone on a quiet machine, with the peers installed (``make bench-peers``, or
``pip install -e '.[bench]'`` then ``pip uninstall -y torchvision torchaudio``)::

    python benchmarks/peers.py                       # 48 examples, one torch thread each
    python benchmarks/peers.py --examples 4 --methods naive bergson
    python benchmarks/peers.py --device cuda --json peers.json   # on a GPU, rows also as JSON

Every method gets the same examples (``workload.make_workload``), the same model and LoRA
adapter (``common.setup_model``) and the same loss: the sum of the token NLL over the completion
tokens of each example (prompt and padding masked), and must deliver the ``(N, N)`` Gram matrix of
the full-dimension per-example gradients of the LoRA weights. Each runs in its own spawned process
(peak RSS is its own), warmed up on two examples, then timed from the token ids to the Gram
matrix. Its Gram matrix is scored against a float64 naive loop by the largest error scaled by the
two gradient norms.

- ``naive``: ``compute_naive_gradients`` (one example at a time), Gram by ``compute_dot_products``.
- ``engine``: ``compute_gradients`` (length-bucketed batches), Gram by ``compute_dot_products``.
- ``bergson`` / ``bergson-tokens``: Bergson 2.5.1's ``InMemoryCollector`` run by its
  ``CollectorComputer``, as ``bergson build`` runs its on-disk collector: no projection
  (``projection_dim=0``), no normaliser or preconditioner, hooks on the 120 LoRA ``lora_A`` /
  ``lora_B`` linears; one example per batch (``bergson``) or its token batching
  (``allocate_batches`` with ``token_batch_size``, default 2048, ``bergson-tokens``). The model's
  gradient flags are set as Bergson's ``setup_model_and_peft`` sets them: everything frozen but the
  input embeddings, whose gradient (tied to the LM head here) Bergson computes and discards. Loss:
  Bergson's ``fwd_bwd_factory`` sums ``cross_entropy(logits[:, :-1], labels[:, 1:])`` over the
  labels that are not -100 and divides by their count only with ``loss_reduction="mean"``; the
  ``IndexConfig`` default, set explicitly here, is ``"sum"``, and the labels are the input ids with
  the prompt set to -100 (its ``pad_and_tensor`` pads them with -100), so no correction is needed.
  Gram by ``compute_dot_products`` on its per-module gradients, summed.
- ``kronfluence``: Kronfluence 1.0.1 ``Analyzer.compute_pairwise_scores`` with identity factors
  (``FactorArguments(strategy="identity")``: the preconditioned gradient is the raw per-example
  gradient), the workload as both query and training set, so the pairwise scores are the Gram
  matrix. Kronfluence takes the loss from the ``Task``; ours returns the summed completion NLL
  (``cross_entropy(..., reduction="sum")`` over labels with the prompt and padding set to -100),
  the form its language-model examples use, for both ``compute_train_loss`` and
  ``compute_measurement``, so again no correction. Its API makes two passes over the data (query
  gradients, then training gradients), both one example per batch by default
  (``--kronfluence-batch``), with all query gradients accumulated before the training pass
  (``query_gradient_accumulation_steps``); its dot products are its own, in float32
  (``score_dtype``'s default), inside the timed region.

Timing covers what a user would run to get the Gram matrix from token ids (for Bergson and
Kronfluence, their set-up objects included), so the float64 Gram of the gradient methods is in it,
and so is its memory in the peak RSS (``benchmarks/engine.py`` stops both before the Gram).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    Sequences,
    describe_machine,
    measure,
    peak_gib,
    scaled_error,
    setup_model,
    time_run,
)

PEERS = {"bergson": "2.5.1", "kronfluence": "1.0.1"}
METHODS = ("naive", "engine", "bergson", "bergson-tokens", "kronfluence")
BERGSON_TOKEN_BATCH = 2048  # IndexConfig.token_batch_size's default


def _labels(ids, mask) -> list[int]:
    return [t if m else -100 for t, m in zip(ids, mask, strict=True)]


def _swiftstudy_runner(method: str, model, modules, pad_id: int, args: dict):
    from swiftstudy.gradients import compute_gradients, compute_naive_gradients
    from swiftstudy.scores import compute_dot_products

    def run(seqs: Sequences) -> torch.Tensor:
        if method == "engine":
            grads = compute_gradients(
                model,
                modules,
                seqs,
                pad_id=pad_id,
                max_examples=args["batch_size"],
                max_tokens=args["batch_tokens"],
                device=args["device"],
            )
        else:
            grads = compute_naive_gradients(model, modules, seqs, device=args["device"])
        return compute_dot_products(grads)

    return run


def _bergson_runner(method: str, model, modules, pad_id: int, args: dict):
    from bergson import CollectorComputer, IndexConfig, InMemoryCollector
    from bergson.data import allocate_batches
    from bergson.utils.worker_utils import processor_for
    from datasets import Dataset

    from swiftstudy.scores import compute_dot_products

    # As bergson.utils.worker_utils.setup_model_and_peft leaves the model.
    model.requires_grad_(False)
    model.get_input_embeddings().requires_grad_(True)
    tracked = {id(m) for m in modules}
    targets = {n for n, m in model.base_model.named_modules() if id(m) in tracked}

    def run(seqs: Sequences) -> torch.Tensor:
        data = Dataset.from_dict(
            {
                "input_ids": [list(ids) for ids, _ in seqs],
                "labels": [_labels(ids, mask) for ids, mask in seqs],
                "length": [len(ids) for ids, _ in seqs],
            }
        )
        cfg = IndexConfig(
            run_path=str(Path(args["workdir"]) / f"bergson-{len(seqs)}"),
            projection_dim=0,
            loss_fn="ce",
            loss_reduction="sum",
            token_batch_size=args["bergson_token_batch"],
        )
        cfg.partial_run_path.mkdir(parents=True, exist_ok=True)
        batches = None  # CollectorComputer's default: one example per batch
        if method == "bergson-tokens":
            batches = allocate_batches(data["length"][:], cfg.token_batch_size)
        collector = InMemoryCollector(
            model=model.base_model,
            processor=processor_for(cfg),
            target_modules=targets,
            data=data,
            cfg=cfg,
        )
        computer = CollectorComputer(
            model=model, data=data, collector=collector, batches=batches, cfg=cfg
        )
        computer.run_with_collector_hooks(desc="bergson")
        return sum(compute_dot_products(g) for g in collector.gradients.values())

    return run


def _kronfluence_task(module_names: list[str]):
    """A Kronfluence ``Task`` whose loss and measurement are both the summed completion NLL."""
    from kronfluence import Task

    class CompletionNLLTask(Task):
        def compute_train_loss(self, batch: dict, model, sample: bool = False) -> torch.Tensor:
            if sample:
                raise NotImplementedError("identity factors need no sampled (true Fisher) loss")
            logits = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                use_cache=False,
            ).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            return F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"
            )

        def compute_measurement(self, batch: dict, model) -> torch.Tensor:
            return self.compute_train_loss(batch, model)

        def get_influence_tracked_modules(self) -> list[str]:
            return module_names

        def get_attention_mask(self, batch: dict) -> torch.Tensor:
            return batch["attention_mask"]

    return CompletionNLLTask()


def _kronfluence_collate(pad_id: int):
    def collate(items: list[dict]) -> dict:
        width = max(len(item["input_ids"]) for item in items)
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for item in items:
            pad = width - len(item["input_ids"])
            out["input_ids"].append(item["input_ids"] + [pad_id] * pad)
            out["attention_mask"].append([1] * len(item["input_ids"]) + [0] * pad)
            out["labels"].append(item["labels"] + [-100] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}

    return collate


def _kronfluence_runner(method: str, model, modules, pad_id: int, args: dict):
    from kronfluence import Analyzer, FactorArguments, ScoreArguments, prepare_model
    from kronfluence.utils.dataset import DataLoaderKwargs

    tracked = {id(m) for m in modules}
    names = [n for n, m in model.named_modules() if id(m) in tracked]
    task = _kronfluence_task(names)
    model = prepare_model(model, task)
    batch = args["kronfluence_batch"]

    def run(seqs: Sequences) -> torch.Tensor:
        dataset = [{"input_ids": list(ids), "labels": _labels(ids, mask)} for ids, mask in seqs]
        analyzer = Analyzer(
            analysis_name=f"peers-{len(seqs)}",
            model=model,
            task=task,
            cpu=args["device"] == "cpu",
            disable_tqdm=True,
            output_dir=str(Path(args["workdir"]) / "kronfluence"),
        )
        loader = DataLoaderKwargs(collate_fn=_kronfluence_collate(pad_id))
        analyzer.fit_all_factors(
            factors_name="identity",
            dataset=dataset,
            per_device_batch_size=batch,
            dataloader_kwargs=loader,
            factor_args=FactorArguments(strategy="identity"),
            overwrite_output_dir=True,
        )
        analyzer.compute_pairwise_scores(
            scores_name="gram",
            factors_name="identity",
            query_dataset=dataset,
            train_dataset=dataset,
            per_device_query_batch_size=batch,
            per_device_train_batch_size=batch,
            dataloader_kwargs=loader,
            score_args=ScoreArguments(
                query_gradient_accumulation_steps=math.ceil(len(seqs) / batch)
            ),
            overwrite_output_dir=True,
        )
        return analyzer.load_pairwise_scores(scores_name="gram")["all_modules"].double()

    return run


_RUNNERS = {
    "naive": _swiftstudy_runner,
    "reference": _swiftstudy_runner,
    "engine": _swiftstudy_runner,
    "bergson": _bergson_runner,
    "bergson-tokens": _bergson_runner,
    "kronfluence": _kronfluence_runner,
}


def _child(method: str, args: dict, result_path: str) -> None:
    logging.disable(logging.INFO)  # Bergson logs every module it tracks, in the timed loop
    torch.set_num_threads(args["threads"])
    dtype = torch.float64 if method == "reference" else torch.float32
    model, modules, sequences, pad_id = setup_model(dtype, args["examples"], device=args["device"])
    with tempfile.TemporaryDirectory(prefix="peers-") as workdir:
        run = _RUNNERS[method](method, model, modules, pad_id, {**args, "workdir": workdir})
        gram, out = time_run(run, sequences, device=args["device"])
    out["gram"] = gram.cpu()
    torch.save(out, result_path)


def _check_peers(methods: list[str]) -> None:
    """Exit with one line when a peer or torchvision would fail the run."""
    for name in ("torchvision", "torchaudio"):
        if importlib.util.find_spec(name) is None:
            continue
        try:
            importlib.import_module(name)
        except Exception as err:  # a CUDA build on CPU torch raises at import
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise SystemExit(
                f"{name} is installed but broken against torch {torch.__version__} ({first}); "
                "it breaks `import transformers`: run `pip uninstall -y torchvision torchaudio`"
            ) from None
    for peer, pinned in PEERS.items():
        if not any(m.startswith(peer) for m in methods):
            continue
        try:
            version = importlib.metadata.version(peer)
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit(
                f"{peer} is not installed: pip install -e '.[bench]' (or drop it from --methods)"
            ) from None
        if version != pinned:
            print(f"warning: {peer} {version} installed, this benchmark was written for {pinned}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each method")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--batch-size", type=int, default=8, help="engine: most examples a batch")
    parser.add_argument("--batch-tokens", type=int, help="engine: token budget (its CPU default)")
    parser.add_argument("--bergson-token-batch", type=int, default=BERGSON_TOKEN_BATCH)
    parser.add_argument("--kronfluence-batch", type=int, default=1)
    parser.add_argument("--no-reference", action="store_true", help="skip the float64 reference")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--json", type=Path, help="also write the table's rows to this file")
    opts = parser.parse_args()
    _check_peers(opts.methods)  # before anything imports transformers

    from swiftstudy.gradients import default_batch_tokens
    from swiftstudy.model import load_base_model

    opts.batch_tokens = opts.batch_tokens or default_batch_tokens(opts.device)
    load_base_model("smollm2")  # convert the GGUF once, outside the timed children
    os.environ["TQDM_DISABLE"] = "1"  # the peers' progress bars; children inherit it at spawn
    machine = describe_machine(opts.threads, opts.device)
    print(machine)
    print("  " + ", ".join(f"{p} {_version(p)}" for p in PEERS))
    args = {
        "examples": opts.examples,
        "threads": opts.threads,
        "batch_size": opts.batch_size,
        "batch_tokens": opts.batch_tokens,
        "bergson_token_batch": opts.bergson_token_batch,
        "kronfluence_batch": opts.kronfluence_batch,
        "device": opts.device,
    }
    rows = []
    for method in opts.methods:
        result = measure(_child, method, args)
        rows.append((method, result))
        print(
            f"  {_label(method, opts):<38} {_per_example(result, opts):6.3f} s/example  "
            f"peak {_memory_kind(opts)} {peak_gib(result):5.2f} GiB  "
            f"threads {result['threads'].item()}  "
            f"load {result['load'][0].item():.2f}->{result['load'][1].item():.2f}",
            flush=True,
        )
    first = rows[0][1]
    print(
        f"workload: {opts.examples} examples, {first['tokens'].item()} tokens, "
        f"{first['completion'].item()} completion tokens"
    )
    reference = None if opts.no_reference else measure(_child, "reference", args)
    naive = dict(rows).get("naive")
    print(
        f"\n| method | s/example | time vs naive | peak {_memory_kind(opts)} GiB | "
        "max Gram error vs float64 | load before → after |"
    )
    print("|---|---|---|---|---|---|")
    table = []
    for method, result in rows:
        vs_naive = result["seconds"].item() / naive["seconds"].item() if naive else None
        err = None if reference is None else scaled_error(result["gram"], reference["gram"])
        print(
            f"| {_label(method, opts)} | {_per_example(result, opts):.3f} | "
            f"{'-' if vs_naive is None else f'{vs_naive:.2f}x'} | {peak_gib(result):.2f} | "
            f"{'-' if err is None else f'{err:.1e}'} | "
            f"{result['load'][0].item():.2f} → {result['load'][1].item():.2f} |"
        )
        table.append(
            {
                "method": method,
                "label": _label(method, opts),
                "peer": next((peer for peer in PEERS if method.startswith(peer)), None),
                "seconds": result["seconds"].item(),
                "per_example": _per_example(result, opts),
                "time_vs_naive": vs_naive,
                "peak_gib": peak_gib(result),
                "gram_error": err,
            }
        )
    print(
        f"\n'time vs naive': seconds over the naive loop's (above 1 is slower). "
        f"{machine} each, load average now {os.getloadavg()}"
    )
    if opts.json is not None:
        summary = {"device": opts.device, "machine": machine, "examples": opts.examples}
        summary["rows"] = table
        opts.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _memory_kind(opts: argparse.Namespace) -> str:
    return "GPU" if torch.device(opts.device).type == "cuda" else "RSS"


def _label(method: str, opts: argparse.Namespace) -> str:
    return {
        "engine": f"swiftstudy engine (batch_tokens={opts.batch_tokens})",
        "naive": "naive loop",
        "bergson": "Bergson (batch 1)",
        "bergson-tokens": f"Bergson (token_batch_size={opts.bergson_token_batch})",
        "kronfluence": f"Kronfluence identity (batch {opts.kronfluence_batch})",
    }[method]


def _per_example(result: dict, opts: argparse.Namespace) -> float:
    return result["seconds"].item() / opts.examples


if __name__ == "__main__":
    main()
