"""Loopback fake servers that speak the real wire formats of the Graph API and OpenAI."""
