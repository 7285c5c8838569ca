"""mpi4py allreduce across the ranks of one task.

deeprc-launch --ranks 2 --backend mpi examples/mpi_allreduce.py
"""

from mpi4py import MPI

from deeprc_core import detect_wiring

comm = MPI.COMM_WORLD
wiring = detect_wiring()
assert comm.Get_rank() == wiring.rank and comm.Get_size() == wiring.world_size, (comm.Get_rank(), wiring)
total = comm.allreduce(wiring.rank + 1, op=MPI.SUM)
if wiring.rank == 0:
    print(f"MPI_OK size={comm.Get_size()} sum={total}", flush=True)
