def main() -> None:
    print("nova")
