"""Storage: the four store protocols (``base``) and their implementations per technology."""
