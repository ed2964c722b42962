"""A finished run and the passes every job makes over it: the run directory format
(``rundir``, with the run's ``config``), ``--workdir`` lists (``workdirs``), a split of its
data (``split``), prediction passes (``passes``), TTA and seed ensembles (``ensemble``).
Below train / evaluate / export / predict, which all read run directories. Importing this
package imports nothing.
"""
