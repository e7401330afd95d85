"""Django apps of Gatehouse; each depends on gatehouse/ and on the ones below it only."""
