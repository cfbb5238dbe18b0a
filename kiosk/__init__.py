"""The kiosk: the portal in a locked-down pywebview window, online or from a USB bundle."""
