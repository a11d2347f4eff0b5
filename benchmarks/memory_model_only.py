"""Peak RSS of a bare unet/resnet34 training step at 512 px, batch 4, no data loading (baseline for memory.py).

python benchmarks/memory_model_only.py          # the figure in docs/performance.md
python benchmarks/memory_model_only.py --tiny   # 64 px smoke mode
"""

import argparse
import resource

import segmentation_models_pytorch as smp
import torch


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # ru_maxrss is in kB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    size = 64 if parser.parse_args().tiny else 512
    torch.manual_seed(0)
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=4)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    images, labels = torch.rand(4, 1, size, size), torch.randint(0, 4, (4, size, size))
    print(f"after import + model: {peak_gb():.2f} GB peak RSS")
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"bare training, unet/resnet34 {size} px batch 4, 2 steps: {peak_gb():.2f} GB peak RSS")


if __name__ == "__main__":
    main()
