from metamixer.lab.cli import split_imports


def test_import_option_is_split_off_wherever_it_stands():
    rest, modules = split_imports(["--import", "a", "fit", "--import=b.c", "--config", "x"])
    assert rest == ["fit", "--config", "x"] and modules == ["a", "b.c"]
