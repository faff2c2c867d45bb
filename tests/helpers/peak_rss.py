"""Run a Python program in a child process and record the child's peak resident memory.

    python tests/helpers/peak_rss.py -m stages.train      # as `python -m stages.train`

The child inherits stdin, stdout, stderr and the environment; its exit status is this one's (a
signal N becomes 128 + N, as a shell reports it). The peak (bytes) goes to the file named by
$PEAK_RSS_FILE. `PipelineRepo.stage` runs every stage this way, so each fault case's memory is
measured (`assert_clean_failure` holds it to MAX_PEAK_RSS).
"""

import os
import resource
import subprocess
import sys

done = subprocess.run([sys.executable, *sys.argv[1:]])
if os.environ.get("PEAK_RSS_FILE"):
    with open(os.environ["PEAK_RSS_FILE"], "w") as f:
        f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024))   # Linux: KiB
sys.exit(done.returncode if done.returncode >= 0 else 128 - done.returncode)
