"""Every configuration section, the secrets resolver, tokens and roles."""
