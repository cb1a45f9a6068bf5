# The two commands of the README. Both set everything up on a fresh machine first.
.PHONY: lab test
lab:  ## set up, then open JupyterLab on the guided notebooks
	scripts/lab.sh
test:  ## set up, then run the whole test suite
	scripts/test.sh
