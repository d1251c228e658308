"""Sub-network and search-space configs: small, validated, serialisable values.

After importance reordering every sub-network is a *prefix slice* of the supernet, so a sub-network
is fully described by which layers it keeps and, per kept layer, how many heads (the first h) and
MLP channels (the first f) it uses. Configs never hold weights.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

from mlfs_edge.families import family_of


@dataclass(frozen=True)
class ArchSpec:
    """The dimensions of a transformer that matter for slicing it."""

    family: str  # `Family.arch` of mlfs_edge.families: "bert", "llama", "roberta", "gpt2", ...
    num_layers: int
    hidden: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate: int
    vocab_size: int
    gated_mlp: bool = False  # Llama: gate/up/down projections; BERT/GPT-2: in/out
    bias: bool = True  # linear layers carry biases (BERT, GPT-2) or not (Llama)

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.num_heads // self.num_kv_heads

    @classmethod
    def from_hf_config(cls, config: Any) -> ArchSpec:
        """The dims of a Hugging Face config, read where its family keeps them (`mlfs_edge.families`)."""
        fam = family_of(config)
        n = fam.names
        hidden, heads = getattr(config, n.hidden), getattr(config, n.heads)
        # An extracted encoder with fewer heads (model_type mlfs_*) keeps the original head size.
        head_dim = (getattr(config, n.head_dim, None) if n.head_dim else None) \
            or getattr(config, "attention_head_size", None) or hidden // heads
        inter = getattr(config, n.intermediate, None) or n.intermediate_per_hidden * hidden
        kv = (getattr(config, n.kv_heads, None) if n.kv_heads else None) or heads
        bias = fam.bias or bool(getattr(config, "attention_bias", False))
        return cls(fam.arch, getattr(config, n.layers), hidden, heads, kv, head_dim, inter,
                   getattr(config, n.vocab), gated_mlp=fam.gated_mlp, bias=bias)

    def layer_params(self, heads: int, mlp: int) -> int:
        """Parameters of one transformer layer with `heads` query heads and `mlp` MLP channels
        (norms included, embeddings excluded)."""
        kv = heads // self.group_size
        q_out, kv_out = heads * self.head_dim, kv * self.head_dim
        b = 1 if self.bias else 0
        attn = self.hidden * (q_out + 2 * kv_out) + q_out * self.hidden + b * (q_out + 2 * kv_out + self.hidden)
        n_mlp_in = 2 if self.gated_mlp else 1
        mlp_params = self.hidden * mlp * (n_mlp_in + 1) + b * (mlp + self.hidden)
        # LayerNorm (weight and bias) in the plain-MLP families, RMSNorm (weight) in the gated ones;
        # a count for budgets, not a state dict (Gemma 2's extra norms are left out).
        norms = 2 * self.hidden * (1 if self.gated_mlp else 2)
        return attn + mlp_params + norms


def _int_tuple(values: Iterable[Any], what: str) -> tuple[int, ...]:
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{what} must be integers, got {v!r}")
        out.append(v)
    return tuple(out)


@dataclass(frozen=True)
class SubnetConfig:
    """Which layers a sub-network keeps and, per kept layer, its heads and MLP width (prefixes)."""

    layers: tuple[int, ...]
    heads: tuple[int, ...]
    mlp: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", _int_tuple(self.layers, "layers"))
        object.__setattr__(self, "heads", _int_tuple(self.heads, "heads"))
        object.__setattr__(self, "mlp", _int_tuple(self.mlp, "mlp"))
        if not self.layers:
            raise ValueError("a sub-network must keep at least one layer")
        if list(self.layers) != sorted(set(self.layers)):
            raise ValueError(f"layers must be strictly increasing layer indices, got {list(self.layers)}")
        if not (len(self.heads) == len(self.mlp) == len(self.layers)):
            raise ValueError(
                f"heads ({len(self.heads)}) and mlp ({len(self.mlp)}) need one entry per kept layer "
                f"({len(self.layers)})")
        if min(self.heads) < 1 or min(self.mlp) < 1:
            raise ValueError("every kept layer needs at least one head and one MLP channel")

    # --- construction -----------------------------------------------------------------------------
    @classmethod
    def full(cls, arch: ArchSpec) -> SubnetConfig:
        n = arch.num_layers
        return cls(tuple(range(n)), (arch.num_heads,) * n, (arch.intermediate,) * n)

    @classmethod
    def uniform(cls, arch: ArchSpec, depth: int | None = None, heads: int | None = None,
                mlp: int | None = None, layers: Sequence[int] | None = None,
                layer_policy: str = "spread") -> SubnetConfig:
        """Same heads and MLP width in every kept layer; `depth` picks layers by `layer_policy`.

        None means the model's own value; zero or a negative count is an error (never "full")."""
        own = {"depth": arch.num_layers, "heads": arch.num_heads, "mlp": arch.intermediate}
        given = {"depth": depth, "heads": heads, "mlp": mlp}
        for key, value in given.items():
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{key} must be an integer, got {value!r}")
            if value < 1:
                raise ValueError(f"{key}={value} is not a size: give 1..{own[key]}, or leave {key} out for the "
                                 f"model's own value ({own[key]})")
        if layers is None:
            layers = layers_for_depth(arch.num_layers, arch.num_layers if depth is None else depth, layer_policy)
        n = len(layers)
        cfg = cls(tuple(layers), (arch.num_heads if heads is None else heads,) * n,
                  (arch.intermediate if mlp is None else mlp,) * n)
        cfg.validate(arch)
        return cfg

    # --- checks and measures ----------------------------------------------------------------------
    def validate(self, arch: ArchSpec) -> SubnetConfig:
        """Raise ValueError with the reason if this sub-network does not fit `arch`."""
        if self.layers[-1] >= arch.num_layers:
            raise ValueError(f"layer index {self.layers[-1]} out of range: the model has {arch.num_layers} layers")
        for layer, h, f in zip(self.layers, self.heads, self.mlp, strict=True):
            if h > arch.num_heads:
                raise ValueError(f"layer {layer}: {h} heads requested, the model has {arch.num_heads}")
            if h % arch.group_size:
                raise ValueError(
                    f"layer {layer}: {h} heads is not a whole number of key/value groups "
                    f"({arch.group_size} query heads per group); use a multiple of {arch.group_size}")
            if f > arch.intermediate:
                raise ValueError(f"layer {layer}: MLP width {f} exceeds the model's {arch.intermediate}")
        return self

    @property
    def depth(self) -> int:
        return len(self.layers)

    def layer_params(self, arch: ArchSpec) -> int:
        return sum(arch.layer_params(h, f) for h, f in zip(self.heads, self.mlp, strict=True))

    def param_fraction(self, arch: ArchSpec) -> float:
        """Share of the full model's transformer-layer parameters this sub-network keeps."""
        return self.layer_params(arch) / SubnetConfig.full(arch).layer_params(arch)

    def is_uniform(self) -> bool:
        return len(set(self.heads)) == 1 and len(set(self.mlp)) == 1

    @property
    def name(self) -> str:
        """Short readable name: L<depth>-H<heads>-F<mlp> (per-layer values joined by '/')."""
        def fmt(vals: tuple[int, ...]) -> str:
            return str(vals[0]) if len(set(vals)) == 1 else "/".join(map(str, vals))
        return f"L{self.depth}-H{fmt(self.heads)}-F{fmt(self.mlp)}"

    # --- serialisation ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, list[int]]:
        return {"layers": list(self.layers), "heads": list(self.heads), "mlp": list(self.mlp)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SubnetConfig:
        if not isinstance(d, dict):
            raise ValueError(f"a sub-network config must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {"layers", "heads", "mlp"}
        missing = {"layers", "heads", "mlp"} - set(d)
        if unknown or missing:
            raise ValueError(
                f"sub-network config needs exactly the keys layers, heads, mlp"
                f"{'; unknown: ' + ', '.join(sorted(unknown)) if unknown else ''}"
                f"{'; missing: ' + ', '.join(sorted(missing)) if missing else ''}")
        for key in ("layers", "heads", "mlp"):
            if not isinstance(d[key], list | tuple):
                raise ValueError(f"{key} must be a list of integers, got {d[key]!r}")
        return cls(tuple(d["layers"]), tuple(d["heads"]), tuple(d["mlp"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> SubnetConfig:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ValueError(f"sub-network config is not valid JSON: {e.msg}") from None

    def to_toml(self) -> str:
        return dumps_toml(self.to_dict())

    @classmethod
    def from_toml(cls, text: str) -> SubnetConfig:
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"sub-network config is not valid TOML: {e}") from None
        return cls.from_dict(d.get("subnet", d))

    @classmethod
    def parse(cls, spec: str, arch: ArchSpec) -> SubnetConfig:
        """From the command line: 'full', a short form 'depth=4,heads=8,mlp=768' (any subset;
        d/h/f also work), inline JSON, or a path to a .json/.toml file. Validated against `arch`."""
        spec = spec.strip()
        if spec == "full":
            return cls.full(arch)
        path = Path(spec)
        if spec.endswith((".json", ".toml")):
            if not path.is_file():
                raise ValueError(f"sub-network config file {spec} does not exist")
            text = path.read_text()
            cfg = cls.from_toml(text) if spec.endswith(".toml") else cls.from_json(text)
        elif spec.startswith("{"):
            cfg = cls.from_json(spec)
        else:
            keys = {"depth": "depth", "d": "depth", "heads": "heads", "h": "heads", "mlp": "mlp", "f": "mlp"}
            kwargs: dict[str, int] = {}
            for part in filter(None, spec.split(",")):
                k, sep, v = part.partition("=")
                if not sep or k.strip() not in keys or not v.strip().lstrip("+-").isdigit():
                    raise ValueError(
                        f"cannot parse sub-network {spec!r}: use 'full', 'depth=4,heads=8,mlp=768', "
                        "inline JSON or a .json/.toml file")
                kwargs[keys[k.strip()]] = int(v)
            if kwargs.get("depth", 1) < 1 or kwargs.get("depth", 1) > arch.num_layers:
                raise ValueError(f"depth must be between 1 and {arch.num_layers}, got {kwargs['depth']} "
                                 "(leave depth out for all the model's layers)")
            return cls.uniform(arch, **kwargs)
        return cfg.validate(arch)

    @classmethod
    def parse_draft(cls, spec: str, target: SubnetConfig, arch: ArchSpec) -> SubnetConfig:
        """A speculative draft for `target`: the short form 'depth=D[,heads=H,mlp=F]' means the target's
        FIRST D layers (at the target's widths unless given), so that the draft shares the target's KV
        cache — as `mlfs-runner generate --draft` reads it; JSON or a file are taken as they are."""
        spec = spec.strip()
        if spec.startswith("{") or spec.endswith((".json", ".toml")) or spec == "full":
            return cls.parse(spec, arch)
        short = cls.parse(spec, arch)  # validates the keys and values
        given = {part.partition("=")[0].strip() for part in spec.split(",") if part.strip()}
        depth = len(short.layers) if given & {"depth", "d"} else len(target.layers)
        if depth > len(target.layers):
            raise ValueError(f"a draft of depth {depth} is deeper than its target ({len(target.layers)} layers)")
        heads = short.heads[:depth] if given & {"heads", "h"} else target.heads[:depth]
        mlp = short.mlp[:depth] if given & {"mlp", "f"} else target.mlp[:depth]
        return cls(target.layers[:depth], tuple(heads), tuple(mlp)).validate(arch)


def layers_for_depth(num_layers: int, depth: int, policy: str = "spread") -> tuple[int, ...]:
    """The layers a sub-network of `depth` layers keeps.

    "spread" drops layers evenly over the stack, always keeping the first and the last (as in
    DynaBERT's depth reduction: neighbouring layers are the most redundant); "first" keeps a prefix.
    """
    if not 1 <= depth <= num_layers:
        raise ValueError(f"depth {depth} out of range 1..{num_layers}")
    if policy == "first" or depth == num_layers:
        return tuple(range(depth))
    if policy != "spread":
        raise ValueError(f"unknown layer policy {policy!r}; use 'spread' or 'first'")
    if depth == 1:
        return (num_layers - 1,)
    step = (num_layers - 1) / (depth - 1)
    return tuple(sorted({round(i * step) for i in range(depth)}))


@dataclass(frozen=True)
class SearchSpace:
    """The sub-networks a supernet is trained for: allowed depths, head counts and MLP widths."""

    arch: ArchSpec
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    mlp: tuple[int, ...]
    layer_policy: str = "spread"
    per_layer: bool = False  # sample heads/MLP width independently per layer (else one value)

    def __post_init__(self) -> None:
        for name in ("depths", "heads", "mlp"):
            vals = tuple(sorted(set(_int_tuple(getattr(self, name), name))))
            if not vals:
                raise ValueError(f"search space: {name} must not be empty")
            object.__setattr__(self, name, vals)
        a = self.arch
        if self.depths[0] < 1 or self.depths[-1] > a.num_layers:
            raise ValueError(f"search space: depths must lie in 1..{a.num_layers}, got {list(self.depths)}")
        bad = [h for h in self.heads if h < 1 or h > a.num_heads or h % a.group_size]
        if bad:
            raise ValueError(f"search space: head counts {bad} impossible (1..{a.num_heads}, "
                             f"multiples of {a.group_size})")
        if self.mlp[0] < 1 or self.mlp[-1] > a.intermediate:
            raise ValueError(f"search space: MLP widths must lie in 1..{a.intermediate}, got {list(self.mlp)}")
        layers_for_depth(a.num_layers, self.depths[0], self.layer_policy)  # checks the policy name

    @classmethod
    def default(cls, arch: ArchSpec, fractions: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                depths: Sequence[int] | None = None) -> SearchSpace:
        """Widths at the given fractions of the full model (rounded to whole KV groups / 8 channels),
        depths from half the layers up."""
        g = arch.group_size
        heads = {max(g, round(arch.num_heads * fr / g) * g) for fr in fractions}
        mlp = {max(8, round(arch.intermediate * fr / 8) * 8) for fr in fractions}
        if depths is None:
            depths = range(max(1, arch.num_layers // 2), arch.num_layers + 1)
        return cls(arch, tuple(depths), tuple(sorted(heads)), tuple(sorted(mlp)))

    def config(self, depth: int, heads: int, mlp: int) -> SubnetConfig:
        return SubnetConfig.uniform(self.arch, depth=depth, heads=heads, mlp=mlp, layer_policy=self.layer_policy)

    def largest(self) -> SubnetConfig:
        return self.config(self.depths[-1], self.heads[-1], self.mlp[-1])

    def smallest(self, vary_depth: bool = True) -> SubnetConfig:
        depth = self.depths[0] if vary_depth else self.depths[-1]
        return self.config(depth, self.heads[0], self.mlp[0])

    def sample(self, rng: random.Random, vary_depth: bool = True) -> SubnetConfig:
        depth = rng.choice(self.depths) if vary_depth else self.depths[-1]
        layers = layers_for_depth(self.arch.num_layers, depth, self.layer_policy)
        if self.per_layer:
            heads = tuple(rng.choice(self.heads) for _ in layers)
            mlp = tuple(rng.choice(self.mlp) for _ in layers)
        else:
            heads, mlp = (rng.choice(self.heads),) * depth, (rng.choice(self.mlp),) * depth
        return SubnetConfig(layers, heads, mlp)

    def contains(self, cfg: SubnetConfig) -> bool:
        try:
            cfg.validate(self.arch)
        except ValueError:
            return False
        return (cfg.depth in self.depths
                and cfg.layers == layers_for_depth(self.arch.num_layers, cfg.depth, self.layer_policy)
                and all(h in self.heads for h in cfg.heads) and all(f in self.mlp for f in cfg.mlp))

    def uniform_configs(self) -> list[SubnetConfig]:
        """Every uniform sub-network in the space, smallest first."""
        cfgs = [self.config(d, h, f) for d in self.depths for h in self.heads for f in self.mlp]
        return sorted(cfgs, key=lambda c: c.layer_params(self.arch))

    def to_dict(self) -> dict[str, Any]:
        return {"depths": list(self.depths), "heads": list(self.heads), "mlp": list(self.mlp),
                "layer_policy": self.layer_policy, "per_layer": self.per_layer}

    @classmethod
    def from_dict(cls, arch: ArchSpec, d: dict[str, Any]) -> SearchSpace:
        unknown = set(d) - {"depths", "heads", "mlp", "layer_policy", "per_layer"}
        if unknown:
            raise ValueError(f"search space: unknown keys {', '.join(sorted(unknown))}")
        full = SubnetConfig.full(arch)
        return cls(arch, tuple(d.get("depths", [arch.num_layers])), tuple(d.get("heads", [full.heads[0]])),
                   tuple(d.get("mlp", [full.mlp[0]])), d.get("layer_policy", "spread"),
                   bool(d.get("per_layer", False)))


def dumps_toml(d: dict[str, Any], _prefix: str = "") -> str:
    """A minimal TOML writer for configs: scalars, lists of scalars, nested tables and arrays of
    tables (a list of dicts: [[name]], as the MLFS config's stages)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    def is_tables(v: Any) -> bool:
        return isinstance(v, list | tuple) and bool(v) and all(isinstance(x, dict) for x in v)

    lines = [f"{k} = {value(v)}" for k, v in d.items() if not isinstance(v, dict) and not is_tables(v)]
    for k, v in d.items():
        if isinstance(v, dict):
            name = f"{_prefix}{k}"
            lines.append(f"\n[{name}]")
            lines.append(dumps_toml(v, name + ".").rstrip("\n"))
    for k, v in d.items():
        if is_tables(v):
            for item in v:
                lines.append(f"\n[[{_prefix}{k}]]")
                lines.append(dumps_toml(item, f"{_prefix}{k}.").rstrip("\n"))
    return "\n".join(lines) + "\n"
