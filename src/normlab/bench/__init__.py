"""The benchmark harness behind ``normlab bench``: speed and saved memory of every registered
layer and weight-side method against torch.nn, native GroupNorm, the layer's eager composition
and the memory-traffic floor.

* `normlab.bench.timing`: clocks, samples, alternating rounds, saved bytes;
* `normlab.bench.cases`: the settings, and each layer's module, input and baselines;
* `normlab.bench.run`: one result record per (setting, layer);
* `normlab.bench.report`: the markdown table, the JSON document, the atomic write.
"""
