"""Sample quality against network evaluations (NFE): rectified flow, MeanFlow and DDPM.

Four trained runs on the same data and network, each with its config's preset: ``flow``
(``configs/flow.py``), ``meanflow`` (``objective=meanflow``), ``ddpm`` (``configs/ddpm.py``,
epsilon prediction) and ``ddpm_v`` (``prediction=v``), both with the uniform loss weighting
of the README's NFE table (the preset's default is now min-SNR). The flow presets train 3000
steps at ``preset=cpu``, the ddpm preset 5500 (its budget is 20 minutes; the README's NFE
table was measured when it trained 3000). Each is evaluated and sampled at every NFE of
``nfes`` with the sampler whose NFE equals its steps: ``euler`` (flow), ``meanflow``
(MeanFlow's average-velocity jumps) and ``dpm_solver_pp`` (DDPM; one step returns the first
denoised estimate). The run trained is ``<family>_nfe<largest>``; the others,
``<family>_nfe<k>``, are sampling-only variants on its checkpoints. Table 3 (sample quality)
then lists FD, KID, precision and recall per run, its ``sampler steps`` column being the NFE:
the FD-against-NFE table.

  python -m experiments.sweep experiments/ablations/nfe.py --root runs/nfe --preset cpu \
      --report runs/nfe_report
  python -m experiments.sweep experiments/ablations/nfe.py:nfes=1+2+4,families=meanflow ...

Arguments: ``nfes`` ('+'-separated, default ``1+2+4+8+20``), ``families`` ('+'-separated,
default ``flow+meanflow+ddpm+ddpm_v``), ``data`` (default: the configs').
"""

from configs.base import parse_args
from experiments.ablations._args import plus_list, plus_numbers
from experiments.spec import Run, sampling_variant
from jaxgen.errors import UserError

# family -> (config file, its arguments, the sampler whose NFE is its steps, description)
FAMILIES = {
    "flow": ("configs/flow.py", {}, "euler", "rectified flow, Euler"),
    "meanflow": ("configs/flow.py", {"objective": "meanflow"}, "meanflow", "MeanFlow jumps"),
    "ddpm": (
        "configs/ddpm.py",
        {"prediction": "eps", "weighting": "uniform"},
        "dpm_solver_pp",
        "DDPM, DPM-Solver++(2M)",
    ),
    "ddpm_v": (
        "configs/ddpm.py",
        {"prediction": "v", "weighting": "uniform"},
        "dpm_solver_pp",
        "DDPM v, DPM-Solver++(2M)",
    ),
}


def get_sweep(arg=None):
    a = parse_args(arg, dict(nfes="1+2+4+8+20", families="+".join(FAMILIES), data=""))
    nfes = sorted(set(plus_numbers("nfes", a["nfes"], int)), reverse=True)
    if nfes[-1] < 1:
        raise UserError(f"sweep argument nfes={a['nfes']!r}: expected positive numbers")
    data = {"data": a["data"]} if a["data"] else {}
    runs = []
    for family in plus_list("families", a["families"], tuple(FAMILIES)):
        config, args, sampler, text = FAMILIES[family]
        base = Run(
            f"{family}_nfe{nfes[0]}",
            config,
            args=dict(args, **data),
            overrides={"sample.sampler": sampler, "sample.steps": nfes[0]},
            description=f"{text}, {nfes[0]} network evaluations (trained here)",
        )
        runs.append(base)
        for nfe in nfes[1:]:
            runs.append(
                sampling_variant(
                    base, f"{family}_nfe{nfe}", f"{text}, {nfe} network evaluations", steps=nfe
                )
            )
    return runs
