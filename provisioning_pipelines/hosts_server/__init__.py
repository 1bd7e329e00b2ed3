"""The graph host server: the one process on a machine that opens its graph files, serving the
``GraphHost`` contract over HTTP (``app``) and started by ``host serve`` (``serve``)."""
