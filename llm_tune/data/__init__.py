"""Data: reading rows from files or the Hub, checking them row by row, rendering them into TRL's formats, and the
training chat templates."""
