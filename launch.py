"""The one launcher: ``python launch.py --config=configs/<family>.py[:args] --workdir=DIR``.

Modes: ``--mode=train`` (default; resumes from the latest checkpoint),
``--mode=sample`` and ``--mode=eval`` (latest checkpoint). Any config key can
be overridden with ``--config.<key>=<value>``. Bad input is a one-line error
and exit status 2. Under SLURM, on a TPU pod, or with
``JAX_COORDINATOR_ADDRESS``/``JAX_NUM_PROCESSES``/``JAX_PROCESS_ID`` set, the
processes join through ``jax.distributed.initialize()``.
"""

import sys

from jaxgen.cli import exit_process, main

if __name__ == "__main__":
    exit_process(main(sys.argv))
