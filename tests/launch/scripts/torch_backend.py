"""deeprc_torch.init_process_group from the launcher's variables; prints the backend torch.distributed got."""

import torch.distributed as dist

from deeprc_torch import init_process_group


def main() -> None:
    init_process_group()  # the backend: DEEPRC_BACKEND (deeprc-launch --backend), else the device's default
    t = __import__("torch").ones(1)
    dist.all_reduce(t)
    print(f"BACKEND rank={dist.get_rank()} {dist.get_backend()} sum={int(t.item())}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
