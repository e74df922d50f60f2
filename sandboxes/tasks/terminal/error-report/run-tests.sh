#!/bin/bash
# Runs the task's tests; TEST_DIR is where the harness copied tests/.
cd "$TEST_DIR" && python3 -m pytest -rA -p no:cacheprovider "$TEST_DIR/test_outputs.py"
