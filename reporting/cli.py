import click
@click.command("report")
def report_command():
    """placeholder"""
