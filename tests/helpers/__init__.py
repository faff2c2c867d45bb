"""Shared test helpers (not tests: no test_ functions here). Test modules import from these,
never from one another.

- `archives`: tiny synthetic cifar-10-python.tar.gz in the real format (`make_archive`,
  `make_arrays`, `fixture_fingerprints`), with hooks for broken and malicious variants
  (`tar_member`, `py2_pickle`, `call_pickle`, `reduce_pickle`), and running the fetch stage
  outside the repo (`write_source`, `fetch_env`, `run_fetch`); `REPO_ROOT`.
- `http`: a local HTTP server that serves an archive and misbehaves to plan (`ArchiveServer`,
  `FaultServer` with "stall-after-<n>", `NAME`), and the fetch stage run against it with short
  timeouts (`fetch_process`, `start_fetch`, `FAST_DOWNLOAD_ENV`).
- `repo`: a fresh git + DVC copy of the repository for runs of the real `dvc` CLI
  (`PipelineRepo.create / clone / fork`, `.dvc()`, `.stage()`), `ROOT`, `BIN`,
  `FIXTURE_TRAIN_PARAMS`, `PINNED`.
- `files`: the one place for file hashes and listings (`md5`, `sha256`, `file_sha256`,
  `digests`, `glob_digests`, `snapshot` of `OUTPUTS`, `listing`) and `assert_clean_failure`
  (exit 1, no traceback, one final `<stage>: error:` line).
- `gradcheck`: centered finite differences (`numerical_gradient`), `relative_error` and a
  layer's every gradient against them (`check_layer_gradients`).
- `layouts`: the same image batch in channels-last memory (`channels_last`); `stacks`: a stack
  of layers run forward and backward (`run_stack`).
- `pipes`: holding a process at its next log line by filling its output pipe (`fill`,
  `blocked_writing`), so tests of running stages need no timing.
- `params`: the values each params rule must refuse, from a stage's schema (`refused`,
  `refused_values`).

tests/conftest.py has pytest rewrite the asserts in these modules, as in test modules.
"""
