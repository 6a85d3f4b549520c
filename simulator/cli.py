import click
@click.command("simulate")
def simulate_command():
    """placeholder"""
