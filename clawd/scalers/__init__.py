"""Built-in ``clawd_scale`` plugins: they act on the scaling signals of :mod:`clawd.scaling`."""
