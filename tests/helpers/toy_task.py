"""A minimal LightningModule + DataModule so the training function's plumbing is tested without a real model."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, TensorDataset


class ToyRegressionTask(pl.LightningModule):
    def __init__(self, learning_rate: float = 0.05) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.learning_rate = learning_rate

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        loss = torch.nn.functional.mse_loss(self.layer(inputs), targets)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.learning_rate)


class ToyDataModule(pl.LightningDataModule):
    def __init__(self, size: int = 64, batch_size: int = 8) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        inputs = torch.randn(size, 4, generator=generator)
        targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
        self.dataset = TensorDataset(inputs, targets)
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.batch_size, shuffle=True)
