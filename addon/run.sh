#!/usr/bin/with-contenv sh
# The add-on's one process. with-contenv restores the container's environment (PYTHONPATH from the
# Dockerfile, SUPERVISOR_TOKEN from the Supervisor), which s6-overlay clears before running CMD.
# The program reads /data/options.json, keeps its state in /data and logs to stdout.
exec python3 -m xiaozhi_addon --options /data/options.json --data /data
