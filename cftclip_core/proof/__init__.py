"""The synthetic proof: does counterfactual (name-swap) fine-tuning teach a CLIP people's names better than
the same loss without counterfactuals, and than plain contrastive fine-tuning? Pre-registered protocol
and results: docs/synthetic-proof.md. Specification (worlds, arms, doses, settings, seeds; no torch):
cftclip_core.specs.proof.

Two synthetic worlds (cftclip_core.synthetic), 16 people each: 'many' (128 contexts: a random batch
of 64 rarely holds two items of one context, so contexts alone tell batch items apart, as with real
news) and 'few' (6 contexts: random batches are full of same-context negatives that differ by name).
Each seed renders its own world (looks, who has which name, contexts, the images) unless --data-seed
holds it fixed.

Stage 0, once per (world, seed, data seed): a tiny CLIP trained with the plain CLIP loss on captions
whose name is replaced by "a person" (it learns contexts, not people), at a constant learning rate,
saved after each dose (--stage0-steps, default 400,1200,2400). Stage 1 trains every arm from every
dose for the same steps on the same batches: zero-shot (not trained), clip (symmetric, learned
scale), i2t (image-to-text at a fixed temperature), cft (i2t + 1 name-swap counterfactual per caption,
the paper's), cft-m3 (3 counterfactuals).

Commands (python -m cftclip_core.proof ...):

  all --out DIR [--seeds 100-105] [--worlds many,few] [--arms A,B] [--data-seed S] [--jobs N]
      [--cache CACHE] [SETTINGS]
      The pre-registered grid by default (each world's own arms). Every (world, arm, seed) is its own
      'run' process, N at a time, in DIR/runs/WORLD/ARM/seed-S (output in its run.log); runs already
      finished there are kept, so the same command resumes. Then writes DIR/results.csv, DIR/table.md
      and DIR/dose-response.svg. Exit 0, or 1 when a run failed.
  run --world W --arm A --seed S [--data-seed D] --out RUN_DIR --cache CACHE [SETTINGS]
      One run, from every dose; the Train page's proof demo launches exactly this. Exit 0 done; 2 a user error
      (message on stderr, nothing trained); 143 stopped by SIGTERM (start it again to go on: finished
      doses and the cached stage 0 are kept); 1 anything else. A RUN_DIR holding a finished run is refused.
  table DIR
      Aggregates the finished runs under DIR into results.csv, table.md and dose-response.svg.
  calibrate [--timed-steps N] [SETTINGS]
      Prints this machine's pace as JSON (seconds per training step of each arm, per embedded image and
      text, per process start), from which cftclip_core.proof.plan estimates a grid's time.

SETTINGS, the same flags for all, run and calibrate (defaults: the pre-registered values):
  --train-items 3000 --val-items 400 --test-items 800   images per world render
  --image-size 64 --text-field title
  --stage0-steps 400,1200,2400 --stage0-lr 0.001        stage-0 doses (one run, saved at each) and its lr
  --steps 300 --lr 0.0003                               stage 1, every trained arm and dose
  --batch-size 64 --warmup-steps 30 --weight-decay 0.05 --grad-clip 1.0   both stages
  --temperature 0.05    the fixed temperature of i2t and cft
  --device cpu

CACHE (default DIR/cache for 'all') holds the rendered worlds, the pixel cache and the stage-0 runs,
each in a folder named by a hash of everything it depends on and built under a file lock. The run
folder's contents: cftclip_core.proof.runs. Each run process uses one CPU thread; results depend
only on the settings and seeds.

Modules: cache (worlds, stage 0), model (the tiny CLIP, trainer configs), evaluation,
batches (false negatives), runs (one run), runner ('all'), results (collecting,
tests), report (table, figure), plan (work and ETA; torch-free), calibrate, cli.
"""
