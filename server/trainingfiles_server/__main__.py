"""`python -m trainingfiles_server`: serve with the configuration from the environment."""

from .app import main

if __name__ == "__main__":
    main()
