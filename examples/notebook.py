# %% [markdown]
# # swiftstudy in a notebook
#
# Make probes, study them on a checkpoint series with the model kept loaded, look at the tables
# and at the probes that drive each verdict, then add a probe set: the second study computes only
# the new set's gradients. Everything runs offline on the bundled SmolLM2-135M-Instruct.
#
# Percent-format cells: open in Jupyter with jupytext, run in VS Code, or run as a script
# (`python examples/notebook.py`, about two minutes on two CPU cores). It writes into
# `$SWIFTSTUDY_NOTEBOOK_DIR` (default `notebook-out/`); set `$SWIFTSTUDY_NOTEBOOK_RUN` to a base
# run's folder to study it instead of the tiny base run made here.

# %%
import os
from pathlib import Path

import swiftstudy
from swiftstudy.demo.dataset import GENERATION_FIELDS, read_jsonl, write_demo_data
from swiftstudy.train import train_spec_from_dict

WORK = Path(os.environ.get("SWIFTSTUDY_NOTEBOOK_DIR", "notebook-out"))
RUN = os.environ.get("SWIFTSTUDY_NOTEBOOK_RUN")

# %% [markdown]
# ## Data and probes
#
# The package's demo data: one plain example per task (`nocot`), another example of each task
# (`similar`, the evals), and base-run data from other tasks. Its reference records carry the
# answers a generator would give, so `build_probes` makes CoT probes with `generator=None`.

# %%
files = write_demo_data(WORK / "data")
built = swiftstudy.build_probes(
    "cot",
    files["nocot"],
    WORK / "probes" / "cot.jsonl",
    generator=None,
    generation_field=GENERATION_FIELDS["cot"],
    use_cache=False,
)
cot = read_jsonl(next(iter(built.files.values())))
nocot, similar = read_jsonl(files["nocot"]), read_jsonl(files["similar"])
print(f"{built.n_probes} CoT probes, e.g. {cot[0]['response'][:60]!r}")

# %% [markdown]
# ## A checkpoint series
#
# A tiny LoRA base run (4 steps, a checkpoint every 2) on the base data; a real study traces a
# longer run (`swiftstudy train`, or your own Trainer's output folder).

# %%
if RUN is None:
    spec = train_spec_from_dict(
        {
            "model": "smollm2",
            "data": str(files["base"]),
            "lora": {"r": 8, "alpha": 64, "targets": ["up_proj", "down_proj"]},
            "lr": 1e-4,
            "warmup_steps": 1,
            "max_steps": 4,
            "save_steps": 2,
            "batch_size": 8,
            "micro_batch_size": 8,
        },
        base_dir=WORK,
    )
    RUN = swiftstudy.run_training(spec, WORK / "base-run", overwrite=True, progress=False).out_dir

# %% [markdown]
# ## The session: the model loaded once

# %%
session = swiftstudy.Session("smollm2", RUN, device="auto")
METRICS = [
    {"name": "Plain → In-task", "probes": "nocot", "evals": "similar", "context": "in-task"},
    {"name": "Plain → Cross-task", "probes": "nocot", "evals": "similar", "context": "cross-task"},
]
result = session.study(sets={"nocot": nocot, "similar": similar}, metrics=METRICS)
print(f"first study: {result.work.computed} gradient(s) computed")
print(result.scores.to_pandas()[["metric", "step", "value", "ci_low", "ci_high"]])

# %% [markdown]
# In Jupyter, a result shows its verdict table and the metrics-by-step figure:

# %%
result  # noqa: B018 (a notebook cell's value is displayed)

# %% [markdown]
# ## Add the CoT probes: only their gradients are computed

# %%
COT_METRICS = [
    {"name": "CoT → In-task", "probes": "cot", "evals": "similar", "context": "in-task"},
    {"name": "CoT → Cross-task", "probes": "cot", "evals": "similar", "context": "cross-task"},
]
result = session.study(
    sets={"nocot": nocot, "similar": similar, "cot": cot}, metrics=[*COT_METRICS, *METRICS]
)
print(
    f"second study: {result.work.computed} gradient(s) computed, {result.work.cached} from the "
    "session's cache"
)
print(result.scores.to_pandas()[["metric", "step", "value", "ci_low", "ci_high"]])

# %% [markdown]
# ## Which probes drive the CoT verdict
#
# Each probe's mean RelInf over the checkpoints and eval examples, the probes that help and hurt
# most, and the eval examples each moves most: a few broken probes, or all of them?

# %%
top = result.top_probes("CoT → In-task", k=3).to_pandas()
print(top[["effect", "probe_id", "task", "mean_relinf", "moved_evals"]].to_string())

# %% [markdown]
# ## Save the usual files and report

# %%
files = result.save(WORK / "cot-study", overwrite=True)
print(f"report: {files.html}")
