"""Training and test data: low-light synthesis from clean photos (:mod:`~mrvae.data.degrade`)
and the datasets, splits and image cache built on it (:mod:`~mrvae.data.datasets`)."""
