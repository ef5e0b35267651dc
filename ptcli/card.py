"""The artifact's README.md: a model card filled from the artifact's metadata."""

from __future__ import annotations

from string import Template as StringTemplate
from typing import TYPE_CHECKING

from ptcli.head import describe

if TYPE_CHECKING:
    from ptcli.artifact import Meta

CARD = StringTemplate("""# ptcli prompt artifact

P-tuning prompts trained with ptcli $version on `$backbone` ($kind LM, frozen$tuned).

## Template

```
$template
```

$n_prompts trainable prompt token(s), $encoder prompt encoder. Only the encoder's output
(`prompts.safetensors`, $n_prompts × $hidden) is needed to predict.$head$reading

## Labels and label words

| label | words | training rows |
| --- | --- | --- |
$label_rows

## Data and results

- training rows: $n_train, dev rows: $n_dev ($dev_source)
- dev accuracy: $dev_acc (macro-F1 $dev_f1), before training: $dev_acc0
- best epoch: $best_epoch of $epochs, seed $seed, lr $lr, batch size $batch_size, precision $precision
$curve
## Use

```
ptcli predict $path input.csv -o predictions.csv
ptcli eval $path labeled.csv
ptcli export-prompts $path -o prompts.safetensors
```

The prompts only work with the backbone they were trained on: ptcli checks its fingerprint
(`$fingerprint`) and refuses any other.
""")


def model_card(meta: Meta, path: str = "ARTIFACT", curve: bool = False) -> str:
    training, args = meta.training, meta.training.args
    rows = "\n".join(f"| {label} | {', '.join(meta.verbalizer[label])} | {training.train_counts.get(label, 0)} |"
                     for label in meta.labels)
    return CARD.substitute(
        version=meta.ptcli_version, backbone=meta.backbone.name, kind=meta.backbone.kind,
        tuned=", then tuned" if training.tune_backbone else "", template=meta.template.text,
        n_prompts=meta.encoder.n_prompts, encoder=meta.encoder.kind, hidden=meta.encoder.hidden_size,
        label_rows=rows, n_train=training.n_train, n_dev=training.n_dev,
        dev_source=(f"dev metrics out-of-fold: {training.folds}-fold cross-validation on the training rows"
                    if training.select == "kfold" else
                    (args.get("dev") or f"{args.get('dev_fraction', 0):.0%} of each class held out")
                    + ("; after they chose the best epoch the prompts were trained again on the training and dev "
                       "rows together (--refit), so the dev figures below are the first run's" if training.refit
                       else "")
                    + ("; then a per-label bias was fit on the training and dev rows (--calibrate fit)"
                       if training.calibrate == "fit" else "")
                    + ("; then the linear head was fit again on the training and dev rows (--head-refit)"
                       if training.head_refit else "")
                    + (", so the dev figures below are from before that" if training.head_refit
                       or training.calibrate == "fit" else "")),
        dev_acc=f"{meta.dev_metrics.accuracy:.4f}", dev_f1=f"{meta.dev_metrics.macro_f1:.4f}",
        dev_acc0=f"{meta.dev_metrics_untrained.accuracy:.4f}", best_epoch=training.best_epoch,
        epochs=args.get("epochs", "?"), seed=training.seed, lr=args.get("lr", "?"),
        batch_size=args.get("batch_size", "?"), precision=training.precision, path=path,
        fingerprint=meta.backbone.fingerprint,
        head=(f"\nThe label scores add a linear read-out of {describe(meta.head_features)} (`--head linear`: "
              f"`head_weight` {len(meta.labels)} × {meta.encoder.hidden_size * len(meta.head_features)} and "
              "`head_bias` in the same file) to the label words'"
              + (", fit again on the training and dev rows at the kept prompts (--head-refit)"
                 if training.head_refit else "") + "." if meta.head == "linear" else ""),
        reading=_reading(meta),
        curve="\n![training curve: losses and dev accuracy per epoch](training.png)\n" if curve else "",
    )


def _reading(meta: Meta) -> str:
    """How the backbone reads the template, where that is not simply as written."""
    parts = []
    read = meta.read_template()
    if read.source != meta.parsed_template().source:
        parts.append(f"The backbone reads it text first: `{read.source!r}`.")
    if meta.demonstrations:
        rule = "with the template's [P]" if meta.demo_prompts else "without [P]"
        parts.append(f"Every row comes after the same {len(meta.demonstrations)} training rows shown as "
                     f"demonstrations ({rule}, their label word in the slot; kept in `ptcli.json`).")
    return "\n\n" + " ".join(parts) if parts else ""
