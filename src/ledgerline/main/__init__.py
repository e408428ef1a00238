"""The composition root, one module per job: ``runtime`` finds or starts the
database and the secret, ``core`` builds the transport-free object graph,
``serve`` runs the API servers over it. The only package that knows every
layer; ``cli`` picks what to run."""
