"""Benchmark cases: one training step (forward, backward, Adam) of a small classifier through the
whole Python layer (autograd + nn + optim), seqblocks vs PyTorch with the same weights."""

from __future__ import annotations

import numpy as np

from . import Case, torch_or_none


def cases(quick: bool) -> list[Case]:
    import seqblocks
    from seqblocks import nn, optim
    import seqblocks.nn.functional as F

    torch = torch_or_none()
    batch, seq, vocab, dim, classes = (16, 16, 1000, 128, 10) if quick else (32, 32, 2000, 128, 10)
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, vocab, (batch, seq))
    labels = rng.integers(0, classes, batch)

    seqblocks.manual_seed(0)
    model = nn.Sequential(nn.Embedding(vocab, dim, padding_idx=0), nn.Linear(dim, 4 * dim), nn.GELU(),
                          nn.Linear(4 * dim, dim), nn.LayerNorm(dim))
    head = nn.Linear(dim, classes)
    params = list(model.parameters()) + list(head.parameters())
    opt = optim.Adam(params, lr=1e-3)

    def ours():
        opt.zero_grad()
        loss = F.cross_entropy(head(model(tokens).mean(1)), labels)
        loss.backward()
        opt.step()

    impls = {"seqblocks": ours}
    if torch is not None:
        tmodel = torch.nn.Sequential(torch.nn.Embedding(vocab, dim, padding_idx=0), torch.nn.Linear(dim, 4 * dim),
                                     torch.nn.GELU(), torch.nn.Linear(4 * dim, dim), torch.nn.LayerNorm(dim))
        thead = torch.nn.Linear(dim, classes)
        tmodel.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()})
        thead.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in head.state_dict().items()})
        topt = torch.optim.Adam(list(tmodel.parameters()) + list(thead.parameters()), lr=1e-3)
        ttokens, tlabels = torch.from_numpy(tokens), torch.from_numpy(labels)

        def theirs():
            topt.zero_grad()
            loss = torch.nn.functional.cross_entropy(thead(tmodel(ttokens).mean(1)), tlabels)
            loss.backward()
            topt.step()

        impls["torch"] = theirs
    name = f"train step emb+MLP({dim}->{4 * dim}->{dim})+LN+CE+Adam, batch {batch}x{seq}"
    return [Case("nn", name, 0.0, impls)]
