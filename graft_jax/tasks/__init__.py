"""One module per `config.task`, each with `run(config)`."""
