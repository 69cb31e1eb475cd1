"""The shell around the features: login, navigation, the settings page, admin bootstrap."""
