"""Text-to-video search over your own folders: index, query, web page."""
